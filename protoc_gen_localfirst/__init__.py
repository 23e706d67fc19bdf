"""protoc-gen-localfirst: a protoc plugin and runtime for local-first gRPC clients."""

__version__ = "0.1.0"
