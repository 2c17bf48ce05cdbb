"""Built-in presets: the YAML files shipped in ``pjepa/configs`` (package data).

``--config`` takes a path to a YAML file or a preset name: ``smoke``,
``cifar10/cpu``, ``tin100/mdn`` (with or without ``.yaml``). A preset's data
path is written as ``$PJEPA_DATA/<file>``, resolved when the data is loaded
(see ``pjepa.data.expand_data_path``).
"""

from __future__ import annotations

from pathlib import Path

from pjepa.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parent / "configs"


def preset_names() -> list[str]:
    """Every preset, as ``dir/name`` without ``.yaml`` (bases that only feed others included)."""
    return sorted(str(p.relative_to(PRESET_DIR).with_suffix("")) for p in PRESET_DIR.rglob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """An existing YAML file as given, else the built-in preset of that name; a ConfigError otherwise."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        yamls = sorted(p.name for p in path.glob("*.yaml"))[:6]
        hint = f" (it holds {', '.join(yamls)})" if yamls else ""
        raise ConfigError(f"--config {name_or_path} is a folder, not a config file{hint}: pass one YAML file or "
                          "a preset name (`pjepa presets` lists them)")
    name = str(name_or_path).removesuffix(".yaml")
    for candidate in (PRESET_DIR / f"{name}.yaml", PRESET_DIR / f"{name.removeprefix('configs/')}.yaml"):
        if candidate.is_file():
            return candidate
    close = [n for n in preset_names() if name.split("/")[-1] in n] or preset_names()[:8]
    raise ConfigError(f"--config {name_or_path}: no such file and no preset of that name "
                      f"(presets like it: {', '.join(close)}; `pjepa presets` lists all)")


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
