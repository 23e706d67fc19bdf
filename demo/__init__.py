"""The example Greeter service and the local-first demo."""
