package main

import "encoding/json"

// mountState describes a writable mount: the root of the mount answers it
// (as JSON) for the xattr fusefs.MountInfoXattr, so that
// `imgmount commit MOUNTPOINT` can open the same image and upper directory.
type mountState struct {
	Image    string   `json:"image"`
	Upper    string   `json:"upper"`
	Ref      string   `json:"ref,omitempty"`
	Platform string   `json:"platform,omitempty"`
	Bases    []string `json:"bases,omitempty"`
	CacheDir string   `json:"cache_dir"`
}

// encodeMountState gives the JSON a writable mount of cfg answers.
func encodeMountState(cfg *config) []byte {
	b, _ := json.Marshal(mountState{
		Image: cfg.image, Upper: cfg.upper, Ref: cfg.ref, Platform: cfg.platform,
		Bases: cfg.bases, CacheDir: cfg.cacheDir,
	})
	return b
}
