"""Put on PYTHONPATH only by tests/test_browser_results.py for its app server: the standalone Host's generator
becomes a painting stand-in (a grid's logic in a browser needs no model; tests/test_eval_service.py has the real
sd-scripts grid, opt-in)."""

import time

from PIL import Image, ImageDraw

from lib_lorakit.evaluate import GenImage
from lib_lorakit.host import StandaloneHost


class SlowPainter:
    name = "painter"

    def generate(self, requests, *, progress=None, cancel=None):
        made = []
        for i, req in enumerate(requests):
            if cancel is not None and cancel.is_set():
                break
            time.sleep(0.3)  # long enough for the page to see the bar move
            weight = req.loras[0].weight if req.loras else 0
            image = Image.new("RGB", (req.width, req.height), (int(180 * weight) % 256, 60, 140))
            ImageDraw.Draw(image).text((2, 2), f"{weight:g}", fill=(255, 255, 255))
            made.append(GenImage(image=image, infotext=f"{req.prompt}\nSteps: {req.steps}, Seed: {req.seed}, "
                                 f"Size: {req.width}x{req.height}", seed=req.seed, request=req))
            if progress:
                progress(i + 1, len(requests), f"weight {weight:g}")
        return made


StandaloneHost.generator = lambda self: SlowPainter()
