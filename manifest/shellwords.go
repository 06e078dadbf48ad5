package manifest

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ShellWords splits text, a file meant to be used as `$(cat FILE)` in a
// shell command line (a thin image's .rkt-args, a layered app's .deps),
// into the words the shell makes of it, or refuses it with an error
// saying where and why. An unquoted command substitution undergoes field
// splitting on IFS (space, tab and newline by default) and then pathname
// expansion (*, ?, [...]), so a word could become other words or other
// paths than a reader of the file sees. ShellWords therefore accepts only
// words of ASCII letters, digits and "-._=,/+" separated by spaces and
// newlines: for such text, every POSIX shell with the default IFS makes
// exactly the words returned, whatever the files around it. A carriage
// return, a tab, a vertical tab, a form feed, a non-ASCII space, a glob
// character, a backslash, a quote or any other character is refused, each
// with its own message.
func ShellWords(text []byte) ([]string, error) {
	var words []string
	line, start := 1, -1
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRune(text[i:])
		switch {
		case r == ' ' || r == '\n':
			if start >= 0 {
				words = append(words, string(text[start:i]))
				start = -1
			}
			if r == '\n' {
				line++
			}
		case wordChar(r):
			if start < 0 {
				start = i
			}
		default:
			return nil, &ShellWordsError{Line: line, Msg: whyNotShellSafe(r, size, text[i])}
		}
		i += size
	}
	if start >= 0 {
		words = append(words, string(text[start:]))
	}
	return words, nil
}

// ShellWordsError reports text that the shell would not split into the
// words it appears to hold.
type ShellWordsError struct {
	Line int // 1-based
	Msg  string
}

func (e *ShellWordsError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// wordChar reports whether r may be part of a word: a character that is
// neither in IFS nor special to pathname expansion, nor to any shell's
// expansion of an unquoted substitution.
func wordChar(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("-._=,/+", r)
}

// whyNotShellSafe explains why the character r (size bytes, first byte b)
// may not be in the file.
func whyNotShellSafe(r rune, size int, b byte) string {
	const notSplit = "the shell does not split words on it, so it would stay inside a word"
	switch {
	case r == utf8.RuneError && size <= 1:
		return fmt.Sprintf("the byte 0x%02x is not UTF-8 text", b)
	case r == '\r':
		return "a carriage return (Windows line ends?): " + notSplit + "; convert the file to Unix line ends (dos2unix) or write it again"
	case r == '\t':
		return "a tab: words must be separated by spaces or newlines only"
	case r == '\v':
		return "a vertical tab: " + notSplit
	case r == '\f':
		return "a form feed: " + notSplit
	case r == 0:
		return "a NUL byte"
	case r >= utf8.RuneSelf && unicode.IsSpace(r):
		return fmt.Sprintf("the non-ASCII space %U: %s, though it looks like a separator", r, notSplit)
	case strings.ContainsRune("*?[]", r):
		return fmt.Sprintf("the glob character %q: the shell would expand the word as a pattern into whatever paths match it", r)
	case strings.ContainsRune("\\'\"`", r):
		return fmt.Sprintf("%q: the shell neither removes quotes nor honours backslashes in $(cat FILE), and a backslash can escape pattern characters", r)
	case r < ' ' || r == 0x7f:
		return fmt.Sprintf("the control character %q", r)
	case r >= utf8.RuneSelf:
		return fmt.Sprintf("the non-ASCII character %q (%U)", r, r)
	}
	return fmt.Sprintf("the character %q, which some shell or shell option treats specially; only letters, digits and -._=,/+ are allowed", r)
}
