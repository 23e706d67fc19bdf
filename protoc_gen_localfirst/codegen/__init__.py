"""The protoc plugin: CodeGeneratorRequest -> generated ``*_localfirst.py`` modules.

This side imports protobuf, jinja2 and ``protoc_gen_localfirst.schema`` only,
never the runtime (grpc, QUIC, DNS, asyncio); ``tests/plugin/test_standalone.py``
checks that in a fresh interpreter.

* ``options``: ``--localfirst_opt`` parsing
* ``naming``, ``reserved``: Python names for proto things, names not to take
* ``policy``: the ``localfirst/options.proto`` call-policy extensions
* ``model``: descriptors -> view models (every decision the templates need)
* ``render``: view models -> Python source through the jinja2 templates
* ``plugin``: the protoc plugin process (stdin -> stdout)
"""
