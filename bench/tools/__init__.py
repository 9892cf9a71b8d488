"""For maintainers: the peers' environments, dlib's port check, unpacking a bundled ensemble."""
