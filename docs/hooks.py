"""mkdocs hook: the README is the site's home page, its links into docs/ made relative to docs/ itself."""

from pathlib import Path

from mkdocs.structure.files import File

README = Path(__file__).resolve().parent.parent / "README.md"


def on_files(files, config):
    """Add README.md as index.md, with `](docs/x.md)` read as `](x.md)`."""
    files.append(File.generated(config, "index.md", content=README.read_text().replace("](docs/", "](")))
    return files
