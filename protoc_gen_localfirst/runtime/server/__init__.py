"""The server bootstrap: HTTP/2 and HTTP/3 listeners, health, node announcement, drain."""
