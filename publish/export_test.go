package publish

// SetMovedHook makes f run after each file publish renames into a tree,
// until restore is called.
func SetMovedHook(f func(rel string)) (restore func()) {
	old := testMoved
	testMoved = f
	return func() { testMoved = old }
}

// SetCheckedHook makes f run after publish checks the images and the
// tree, before it stages them, until restore is called.
func SetCheckedHook(f func()) (restore func()) {
	old := testChecked
	testChecked = f
	return func() { testChecked = old }
}
