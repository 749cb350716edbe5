"""Options of `adapt` and `diagnose` from a YAML or TOML file (`--config FILE`).

Keys are the option names, with dashes or underscores (`held-out`, `learning_rate`), and `data`
for the dataset. Paths are read as on the command line, from the working directory. Each run
folder keeps its resolved options as `config.yaml`, so `adapt --config RUN/config.yaml` repeats it.
"""

from pathlib import Path

import yaml

SAVED_NAME = "config.yaml"


class ConfigFileError(ValueError):
    pass


def read_config_file(path: Path) -> dict:
    """The file's top-level mapping; a clear error naming the file for anything else."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigFileError(f"{path}: cannot read ({e.strerror})") from None
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            raise ConfigFileError(f"{path}: TOML needs Python 3.11 or later; write the file as YAML") from None
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigFileError(f"{path}: invalid TOML ({e})") from None
    elif path.suffix in (".yaml", ".yml"):
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as e:
            line = f":{e.problem_mark.line + 1}" if getattr(e, "problem_mark", None) else ""
            raise ConfigFileError(f"{path}{line}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
    else:
        raise ConfigFileError(f"{path}: a configuration file ends in .yaml, .yml or .toml")
    if not isinstance(values, dict):
        raise ConfigFileError(f"{path}: expected a mapping of option names to values")
    return values


def option_defaults(values: dict, names: dict[str, str], path: Path) -> dict:
    """Map the file's keys to parameter names; `names` maps every accepted spelling to its parameter."""
    defaults = {}
    for key, value in values.items():
        name = names.get(str(key).replace("_", "-"))
        if name is None:
            known = ", ".join(sorted({n.replace("_", "-") for n in names.values()}))
            raise ConfigFileError(f"{path}: unknown option '{key}'; the options are {known}")
        defaults[name] = value
    return defaults


def write_config_file(path: Path, options: dict) -> None:
    header = "# slearn-mlx options of this run: `slearn_mlx adapt --config THIS_FILE` repeats it;\n" \
             "# options given on the command line override the ones here.\n"
    path.write_text(header + yaml.safe_dump(options, sort_keys=False, allow_unicode=True), encoding="utf-8")
