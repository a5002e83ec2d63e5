"""The template registry: built-in templates plus any folder of YAML files, by (scenario, task)."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

from ragrec.errors import UnknownNameError
from ragrec.prompts.templates import PromptTemplate
from ragrec.tasks import TASKS

__all__ = ["TemplateRegistry", "builtin_registry", "BUILTIN_DIR", "DEFAULT_SCENARIO"]

BUILTIN_DIR = Path(__file__).parent / "builtin"
DEFAULT_SCENARIO = "default"


class TemplateRegistry:
    """(scenario, task) -> template. A scenario without its own template for a task uses the
    ``default`` scenario's. Adding a second template for the same key is an error."""

    def __init__(self) -> None:
        self._templates: dict[tuple[str, str], PromptTemplate] = {}

    def add(self, template: PromptTemplate) -> PromptTemplate:
        if template.key in self._templates:
            raise ValueError(f"a template for {template.scenario}/{template.task} is already registered")
        self._templates[template.key] = template
        return template

    def load_dir(self, folder: str | PathLike[str]) -> TemplateRegistry:
        """Add every ``*.yaml`` under ``folder`` (any layout; scenario and task come from the file)."""
        for path in sorted(Path(folder).rglob("*.yaml")):
            self.add(PromptTemplate.from_file(path))
        return self

    def scenarios(self) -> list[str]:
        return sorted({s for s, _ in self._templates})

    def get(self, scenario: str, task: str) -> PromptTemplate:
        if task not in TASKS:
            raise UnknownNameError("task", task, list(TASKS))
        for key in ((scenario, task), (DEFAULT_SCENARIO, task)):
            if key in self._templates:
                return self._templates[key]
        raise UnknownNameError(f"template for task {task!r} in scenario", scenario, self.scenarios())

    def __iter__(self):
        return iter(self._templates.values())

    def __len__(self) -> int:
        return len(self._templates)


def builtin_registry() -> TemplateRegistry:
    """The templates shipped with ragrec (``ragrec/prompts/builtin``)."""
    return TemplateRegistry().load_dir(BUILTIN_DIR)
