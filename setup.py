"""Builds the ``portico`` package (metadata and dependencies are in ``setup.cfg``).

The checkout keeps ``templates/`` and ``migrations/`` at the top level, where a reader looks
for them; the package carries them inside ``core`` (``core/templates``, ``core/migrations``),
so nothing with a generic name lands in site-packages. Every other file ships from where it is.
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py

MAPPED = {"core.templates": "templates", "core.migrations": "migrations"}
DATA = ["*.html", "*.txt", "*.css", "*.js", "*.mo", "*.svg", "*.png", "*.ttf", "*.otf", "*.woff2"]


def packages():
    """Every folder that ships, as dotted names: the code, its data folders and the mapped ones."""
    found = find_namespace_packages(include=["core", "core.*", "plugins", "plugins.*"],
                                    exclude=["plugins.stripe", "plugins.stripe.*", "*.__pycache__"])
    for package, folder in MAPPED.items():
        found += [package] + [f"{package}.{sub}" for sub in find_namespace_packages(folder)]
    return found


class BuildWithCatalogs(build_py):
    """Also compiles the translation catalogs (``.po`` → ``.mo``) into the build, so a wheel
    built from a fresh clone speaks every language."""

    def run(self):
        super().run()
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        for source in Path("core/translations").glob("*/LC_MESSAGES/*.po"):
            target = Path(self.build_lib) / source.with_suffix(".mo")
            target.parent.mkdir(parents=True, exist_ok=True)
            with source.open("rb") as po, target.open("wb") as mo:
                write_mo(mo, read_po(po))


setup(packages=packages(), package_dir=MAPPED, package_data={"": DATA}, include_package_data=False,
      cmdclass={"build_py": BuildWithCatalogs})
