// Package imagetest builds container images in Go for the tests of every
// package: layer tars from a list of entries, in-memory images over them,
// image tarballs in each layout imgmount reads, and upper directories as the
// writable mount leaves them. Like containerd's tartest, it is an
// independent description of the formats: it names whiteouts and xattrs by
// their literal strings rather than through the code under test.
package imagetest
