"""docs/warnings.md quotes the messages as the code prints them."""

from __future__ import annotations

from pathlib import Path

from protoc_gen_localfirst.codegen import plugin
from protoc_gen_localfirst.runtime.client.tls_reload import FILES_SKIPPED_WARNING
from protoc_gen_localfirst.runtime.identity import NO_NODE_WARNING, missing_node_warning

DOC = (Path(__file__).resolve().parents[1] / "docs" / "warnings.md").read_text()


def test_no_node_warning_is_quoted_verbatim() -> None:
    assert f"\n{NO_NODE_WARNING}\n" in DOC


def test_missing_node_warning_is_quoted_with_placeholders() -> None:
    message = missing_node_warning("<node>", ["<node-a>", "<node-b>", "<node-c>"])
    assert message is not None
    before, after = message.split("(replicas are on ")
    assert before in DOC
    assert after.split(")", 1)[1] in DOC  # ". Calls go to other nodes. ..."


def test_binding_warning_is_quoted() -> None:
    assert (
        "<module>.<Class>.<method> is not served: servicer methods are named exactly like the"
        " rpc, so rename it to <Rpc> (rpc <package.Service>/<Rpc> answers UNIMPLEMENTED until"
        " then)"
    ) in DOC


def test_plugin_warning_is_quoted_with_placeholders() -> None:
    message = plugin.options_import_warning(["<file.proto>"]).rstrip("\n")
    head, tail = message.split(" imports ", 1)
    assert head.startswith("protoc-gen-localfirst: warning: <file.proto>")
    assert f"import[s] {tail}" in DOC


def test_tls_files_skipped_warning_is_quoted_with_placeholders() -> None:
    assert f"\n{FILES_SKIPPED_WARNING % '<why>'}\n" in DOC
