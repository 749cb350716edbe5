"""What a package of the user's can add by name: graders (grade.py), selection policies (selection.py) and
backends (backends.py).

Each kind has a registry: the built-in implementations, and those that installed packages declare as
entry points in the kind's group, found through the standard library (importlib.metadata) as `llm` finds
its plug-ins. A package adds a grader, say, with this in its pyproject.toml:

    [project.entry-points."slearn_mlx.graders"]
    icd10 = "my_package.grading:icd10"

and `--grader short=icd10` grades the short answers with it. The names are looked up in the installed
packages' metadata, which imports nothing; a plug-in is imported when its name is first asked for. A
built-in name is never taken over by a plug-in.
"""

from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points


class PluginError(ValueError):
    """A name that neither a built-in nor an installed plug-in has, or a plug-in that is not what its group holds."""


@dataclass
class Registry:
    what: str  # one implementation, in messages: "grader"
    group: str  # the entry-point group plug-ins declare themselves in: "slearn_mlx.graders"
    kind: type  # what the group holds; a plug-in that is a plain function is made one by kind(function)
    builtins: dict
    loaded: dict = field(default_factory=dict)  # the plug-ins imported so far, by name

    def plugins(self) -> dict[str, EntryPoint]:
        return {ep.name: ep for ep in entry_points(group=self.group) if ep.name not in self.builtins}

    def names(self) -> list[str]:
        return [*self.builtins, *sorted(self.plugins())]

    def __getitem__(self, name: str):
        if name in self.builtins:
            return self.builtins[name]
        if name not in self.loaded:
            plugin = self.plugins().get(name)
            if plugin is None:
                raise PluginError(f"unknown {self.what} {name!r}; choose one of {', '.join(self.names())}")
            self.loaded[name] = self.made(plugin)
        return self.loaded[name]

    def made(self, plugin: EntryPoint):
        found = plugin.load()
        if isinstance(found, self.kind):
            return found
        try:
            if callable(found):
                return self.kind(found)
        except TypeError:  # the kind needs more than a function
            pass
        raise PluginError(f"{self.what} {plugin.name!r} of {self.group} ({plugin.value}) is neither a "
                          f"{self.kind.__name__} nor a function to make one of")
