"""Built-in presets: the YAML files shipped in ``pjepa/configs`` (package data).

``--config`` takes a path to a YAML file or a preset name: ``smoke``,
``cifar10/cpu``, ``tin100/mdn`` (with or without ``.yaml``). A preset's data
path is written as ``$PJEPA_DATA/<file>``, resolved when the data is loaded
(see ``pjepa.data.expand_data_path``). ``PresetFolder`` does the look-up for any
folder of presets: the training configs (``CONFIGS``) and the generative study's.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from pjepa.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parent / "configs"


@dataclass(frozen=True)
class PresetFolder:
    """A folder of YAML presets shipped with the package, and how the command line names it.

    The training configs are ``CONFIGS``; another schema (the generative study's options) keeps its presets in
    a folder of its own and looks them up the same way.
    """

    root: Path
    option: str = "--config"  # the command-line option that takes a preset name or a YAML path
    listing: str = "`pjepa presets`"  # what lists every preset of the folder

    def names(self) -> list[str]:
        """Every preset, as ``dir/name`` without ``.yaml`` (bases that only feed others included)."""
        return sorted(str(p.relative_to(self.root).with_suffix("")) for p in self.root.rglob("*.yaml"))

    def resolve(self, name_or_path: str | Path) -> Path:
        """An existing YAML file as given, else the preset of that name; a ConfigError otherwise."""
        path = Path(name_or_path)
        if path.is_file():
            return path
        if path.is_dir():
            yamls = sorted(p.name for p in path.glob("*.yaml"))[:6]
            hint = f" (it holds {', '.join(yamls)})" if yamls else ""
            raise ConfigError(f"{self.option} {name_or_path} is a folder, not a config file{hint}: pass one YAML "
                              f"file or a preset name ({self.listing} lists them)")
        name = str(name_or_path).removesuffix(".yaml")
        for candidate in (self.root / f"{name}.yaml", self.root / f"{name.removeprefix('configs/')}.yaml"):
            if candidate.is_file():
                return candidate
        names = self.names()
        # nearest spellings first (a typo: cifar10/cpuu -> cifar10/cpu), then presets holding the last part
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
        close += [n for n in names if name.split("/")[-1] in n and n not in close]
        like = f"presets like it: {', '.join(close[:8])}; " if close else ""
        raise ConfigError(f"{self.option} {name_or_path}: no such file and no preset of that name "
                          f"({like}{self.listing} lists all)")


#: The training configs (``--config``).
CONFIGS = PresetFolder(PRESET_DIR)


def preset_names() -> list[str]:
    """Every training preset, as ``dir/name`` without ``.yaml`` (bases that only feed others included)."""
    return CONFIGS.names()


def resolve_config_path(name_or_path: str | Path) -> Path:
    """An existing YAML file as given, else the built-in training preset of that name; a ConfigError otherwise."""
    return CONFIGS.resolve(name_or_path)


def describe(path: Path, width: int = 100) -> str:
    """A preset's one-line description: the first sentence of its leading comment block, cut to ``width``."""
    words = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("# ").strip())
    text, end = " ".join(words), 0
    while end < 50:  # whole sentences, at least ~50 characters ("Tiny ImageNet-100 (GPU)." says too little)
        nxt = text.find(". ", end + 1)
        if nxt < 0:
            end = len(text)
            break
        end = nxt + 1
    text = text[:end]
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def list_presets() -> list[tuple[str, str]]:
    """(name, one-line description) of every preset."""
    return [(name, describe(PRESET_DIR / f"{name}.yaml")) for name in preset_names()]
