"""DnsSource against a real DNS server (dnsmasq)."""
