"""Which generator a Host uses: its own where it has one (the webui's txt2img, `WebuiHost.generator()`), else
sd-scripts' gen_img.py in the trainer environment; `remote_generator(url)` for a webui elsewhere is the caller's
explicit choice. The standalone Host knows nothing of generation, so the core's lower floors never import it."""

from __future__ import annotations

from typing import Any, Optional

from . import Generator


def host_generator(host: Any, *, default_checkpoint: Optional[str] = None) -> Generator:
    """The Host's own generator, else the standalone one; a LorakitError naming what is missing (the trainer
    environment, sd-scripts' gen_img.py) when neither can make images here. `default_checkpoint` (a run's base
    model) is what the standalone generator makes a request without a checkpoint with — what the LoRA was trained
    on, whatever else the models folder holds; the webui generates with its loaded model."""
    own = getattr(host, "generator", None)
    if own is not None:
        return own()
    from .sd_scripts_gen import standalone_generator

    if default_checkpoint:
        return standalone_generator(host, default_checkpoint=default_checkpoint)
    return standalone_generator(host)
