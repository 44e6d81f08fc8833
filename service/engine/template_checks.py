"""Templates at load time: each file in rules/templates/ read and checked, and every template a
send step names checked against it (it exists, has the channels the step sends on, one per
variant where the step gives a template per variant)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from service.engine import templates
from service.engine.rules_folder import Folder
from service.engine.schema_errors import did_you_mean
from service.engine.staff_format import SendSpec
from service.engine.yamlsource import Document, Path_

# Every template by name; the model is None when its file has errors (the name is still
# known, so rules using it do not also get 'unknown template').
Found = dict[str, tuple[templates.Template | None, Document | None]]


def load_templates(folder: Folder, directory: Path) -> Found:
    found: Found = {}
    if not directory.is_dir():
        return found
    folder.refuse_yml(directory)
    for path in sorted(directory.glob("*.yaml")):
        doc = folder.read(path)
        template = None
        if doc is not None:
            template = folder.validate(doc, templates.Template)
            for where, message in templates.check_template(doc):
                folder.error(where, message)
        found[path.stem] = (template, doc)
    return found


class ReportAt(Protocol):
    """Reports a problem at a path inside the rule being checked."""

    def __call__(self, path: Path_, message: str, *, key: bool = False) -> None: ...


class TemplateReferences:
    """The templates one rule's send steps name."""

    def __init__(self, found: Found, variants: list[str], templates_dir: str, error: ReportAt):
        self.found, self.variants, self.templates_dir = found, variants, templates_dir
        self.error = error

    def check(self, path: Path_, send: SendSpec) -> None:
        names: list[tuple[Path_, str]]
        if isinstance(send.template, str):
            names = [((*path, "template"), send.template)]
        else:
            names = [((*path, "template", v), name) for v, name in send.template.items()]
            self.variant_templates((*path, "template"), send.template)
        for where, name in names:
            self.template(where, name, send.channel, (*path, "fallback"), send.fallback)

    def variant_templates(self, path: Path_, by_variant: dict[str, str]) -> None:
        variants = self.variants
        if not variants:
            self.error(
                path,
                "a template per variant needs variants, and this rule has none: "
                "give one template name or add variants to the rule",
            )
            return
        for variant in by_variant:
            if variant not in variants:
                self.error(
                    (*path, variant),
                    f"{variant!r} is not a variant of this rule{did_you_mean(variant, variants)}: "
                    "its variants are " + ", ".join(variants),
                    key=True,
                )
        missing = [v for v in variants if v not in by_variant]
        if missing:
            self.error(path, "no template for variant " + ", ".join(repr(v) for v in missing))

    def template(
        self,
        path: Path_,
        name: str,
        channel: str,
        fallback_path: Path_,
        fallback: Sequence[str],
    ) -> None:
        if name not in self.found:
            self.error(
                path,
                f"unknown template {name!r}{did_you_mean(name, self.found)}: templates are the "
                f"files in {self.templates_dir}/",
            )
            return
        template = self.found[name][0]
        if template is None:
            return  # its own errors are reported at the template
        channels = template.channels()
        if channel not in channels:
            self.error(
                path,
                f"template {name!r} has no {channel} section, but this step sends it by {channel}",
            )
        for i, other in enumerate(fallback):
            if other not in channels and other != channel:
                self.error(
                    (*fallback_path, i),
                    f"template {name!r} has no {other} section, needed for the fallback to {other}",
                )
