// Package integration holds imgmount's end-to-end tests: they build real
// images with real tools (debootstrap, umoci, skopeo, GNU tar) and by hand,
// mount them with the real imgmount binary, and compare every path and
// attribute with what `umoci unpack` makes of the same image.
//
// Run them with `make test`, or `go test ./integration/ -v` as root with
// FUSE available. Built images are kept in integration/testdata/out (or
// $IMGMOUNT_TESTDATA) and reused by later runs.
package integration
