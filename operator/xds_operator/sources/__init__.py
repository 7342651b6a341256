"""Where Route and Backend objects come from: files on disk, or the Kubernetes API."""
