# Sphinx configuration for the llm-consortium documentation (MyST Markdown, furo),
# laid out the way simonw/llm's docs/ are. Build: make docs (warnings are errors).
project = "llm-consortium"
copyright = "llm-consortium contributors"
author = "llm-consortium contributors"

extensions = ["myst_parser"]
myst_enable_extensions = ["colon_fence"]
# `[text](page.md#a-heading)` links work for headings down to ###.
myst_heading_anchors = 3

source_suffix = {".md": "markdown"}
master_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
language = "en"
pygments_style = "sphinx"

html_theme = "furo"
html_title = "llm-consortium"
html_static_path: list[str] = []
