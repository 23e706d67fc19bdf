"""mkdocs hooks: repository files in the site.

The documentation pages link to files of the repository outside ``docs/``
(``../deploy/greeter.yaml``) so that they also work when read in a checkout
or a repository browser. The site has no such files, and no repository host
to link to, so those links become code spans naming the path.

``<!-- include: PATH -->`` on a line of its own (PATH relative to the
repository root) is replaced by that Markdown file, its links rewritten the
same way: the benchmarks page is BENCHMARKS.md, kept in one place.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")
_INCLUDE = re.compile(r"^<!-- include: (\S+) -->$", re.MULTILINE)


def _rewrite(markdown: str, source_dir: Path, root: Path, docs: Path) -> str:
    """Links to repository files outside ``docs/`` become code spans."""

    def replace(match: re.Match[str]) -> str:
        text, href = match.group(1), match.group(2)
        if "://" in href or href.startswith(("#", "mailto:")):
            return match.group(0)
        path = href.partition("#")[0]
        resolved = (source_dir / path).resolve()
        if resolved.is_relative_to(docs) or not resolved.is_relative_to(root):
            return match.group(0)
        if not resolved.exists():
            return match.group(0)  # left for mkdocs to report
        shown = resolved.relative_to(root).as_posix() + ("/" if resolved.is_dir() else "")
        if text.strip("`") == shown or text.strip("`") == shown.rstrip("/"):
            return f"`{shown}`"
        return f"{text} (`{shown}`)"

    return _LINK.sub(replace, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs = Path(config["docs_dir"]).resolve()
    root = docs.parent

    def include(match: re.Match[str]) -> str:
        path = (root / match.group(1)).resolve()
        return _rewrite(path.read_text(encoding="utf-8"), path.parent, root, docs)

    markdown = _INCLUDE.sub(include, markdown)
    source = Path(page.file.abs_src_path).resolve().parent
    return _rewrite(markdown, source, root, docs)
