"""Turn a profile's `args:` mapping into engine flags, in the engine's own spelling."""

from __future__ import annotations

from typing import Any

from ..errors import ProfileError


def flag_name(key: str) -> str:
    return key if key.startswith("-") else f"--{key}"


def passthrough(args: dict[str, Any], *, reserved: dict[str, str], unsafe: set[str],
                allow_unsafe: bool, where: str) -> list[str]:
    """``{flash-attn: "on", verbose: true, lora: [a, b]}`` -> ``--flash-attn on --verbose --lora a --lora b``.

    ``true`` gives the bare flag, ``false``/``null`` leave it out, a list repeats it.
    ``reserved`` maps flags llmctl sets itself to the profile key to use instead.
    """
    out: list[str] = []
    for key, value in args.items():
        flag = flag_name(key)
        bare = flag.lstrip("-")
        if flag in reserved or bare in reserved:
            use = reserved.get(flag) or reserved.get(bare)
            raise ProfileError(f"{where}: args.{key}: llmctl sets this flag itself; use `{use}` instead")
        if bare in unsafe and not allow_unsafe:
            raise ProfileError(f"{where}: args.{key}: this flag lets the model run tools or shell "
                               "commands; set `allow_unsafe_args: true` in the profile if you mean it")
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v is None or v is False:
                continue
            if v is True:
                out.append(flag)
            elif isinstance(v, (dict, list)):
                raise ProfileError(f"{where}: args.{key}: expected a string, number or boolean")
            else:
                out += [flag, str(v)]
    return out
