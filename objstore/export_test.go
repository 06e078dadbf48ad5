package objstore

// Abandon stops renewing l without releasing it, as a holder killed.
func Abandon(l *Lease) {
	close(l.stop)
	<-l.done
}
