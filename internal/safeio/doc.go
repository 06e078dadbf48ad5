// Package safeio opens files and echoes strings that may be hostile: a
// path named on the command line or found in a directory may be a FIFO
// that would block a plain open, a directory, a device or a huge file; a
// string read from an archive, a key or a signature may hold terminal
// control sequences or megabytes of text.
//
// OpenRegular opens without blocking and accepts regular files only;
// ReadFile adds a size cap checked before reading. Quote makes a string
// safe and short enough to print.
package safeio
