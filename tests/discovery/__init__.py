"""Discovery tests: DNS (dnsmasq) and Kubernetes (a fake API server)."""
