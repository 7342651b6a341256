"""What the proxies ACKed or NACKed, turned into object status, and the HTTP endpoints that show it."""
