package publish

// SetMovedHook makes f run after each file publish renames into a tree,
// until restore is called.
func SetMovedHook(f func(rel string)) (restore func()) {
	old := testMoved
	testMoved = f
	return func() { testMoved = old }
}
