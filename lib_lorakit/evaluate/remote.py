"""A webui elsewhere, by URL: images and X/Y/Z grids through its HTTP API (`--api`; `--api-auth` as an optional login).

`/sdapi/v1/txt2img` answers base64 images without a `parameters` chunk, so each image's infotext comes from the
answer's `info` JSON. Grids run the webui's own X/Y/Z plot script (`script_name` "x/y/z plot", 18 positional
`script_args`, each axis looked up by label in `/sdapi/v1/script-info`: A1111 and Forge number them differently).
Checkpoints, samplers and LoRAs are checked against the webui's own lists first, because the webui would quietly
use its current checkpoint, its default sampler or no LoRA at all.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, Optional

from PIL import Image

from ..errors import Cancelled, LorakitError, NotFound
from ..progress import CancelFlag, ProgressFn
from . import AxisSpec, GenImage, GenRequest, GridResult, xyz

MAX_ANSWER = 1 << 30  # bytes read from one answer: a grid of many large cells stays well below
DEFAULT_TIMEOUT = 3600.0  # one txt2img call: a whole grid on a slow GPU


class WebuiApi:
    """The webui's HTTP API at `url`, with HTTP Basic `auth` (user, password) where it runs with --api-auth."""

    def __init__(self, url: str, *, auth: Optional[tuple[str, str]] = None, timeout: float = DEFAULT_TIMEOUT,
                 connect_timeout: float = 30.0):
        parsed = urllib.parse.urlsplit(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise LorakitError(f"The webui address {url!r} is not an http:// or https:// URL (e.g. "
                               "http://127.0.0.1:7860).")
        self.url = url.strip().rstrip("/")
        self.auth = auth
        self.timeout = timeout
        self.connect_timeout = connect_timeout

    def get(self, path: str, *, timeout: Optional[float] = None) -> Any:
        return self._call("GET", path, None, timeout or self.connect_timeout)

    def post(self, path: str, body: Optional[dict] = None, *, timeout: Optional[float] = None) -> Any:
        return self._call("POST", path, body if body is not None else {}, timeout or self.timeout)

    def _call(self, method: str, path: str, body: Optional[dict], timeout: float) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode("utf-8"), "application/json"
        if self.auth is not None:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (http/https checked)
                raw = answer.read(MAX_ANSWER + 1)
        except urllib.error.HTTPError as e:
            raise self._http_error(path, e.code, _detail(e)) from None
        except TimeoutError:
            raise LorakitError(f"The webui at {self.url} did not answer {path} within {timeout:.0f} s; it may be busy "
                               "with other work. Try again when it is idle.") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise LorakitError(f"Cannot reach the webui at {self.url} ({reason}). Check that it is running, that the "
                               "address and port are right, and that it listens on the network (--listen) when it "
                               "runs on another machine.") from None
        if len(raw) > MAX_ANSWER:
            raise LorakitError(f"The webui at {self.url} answered {path} with more than {MAX_ANSWER >> 20} MB; make "
                               "smaller grids (fewer cells or a smaller size).")
        try:
            return json.loads(raw)
        except ValueError:
            raise LorakitError(f"The webui at {self.url} answered {path} with something that is not JSON; is that "
                               "address a webui?") from None

    def _http_error(self, path: str, status: int, detail: str) -> LorakitError:
        where = f"The webui at {self.url}"
        if status == 401:
            if self.auth is None:
                return LorakitError(f"{where} asks for a login (HTTP 401): give the user and password of its "
                                    "--api-auth as USER:PASS.")
            return LorakitError(f"{where} refused the login of user {self.auth[0]!r} (HTTP 401): check USER:PASS "
                                "against its --api-auth.")
        if status == 404 and path.startswith("/sdapi/"):
            return LorakitError(f"{where} has no API ({path} answered 404): start the webui with --api (add it to "
                                "COMMANDLINE_ARGS), or check that the address is a webui's.")
        if status == 403:
            return LorakitError(f"{where} refused {path} (HTTP 403{': ' + detail if detail else ''}).")
        if status == 422:
            return LorakitError(f"{where} refused the request to {path} as invalid: {detail or 'no reason given'}.")
        return LorakitError(f"{where} failed on {path} (HTTP {status}{': ' + detail if detail else ''}); its console "
                            "says more.")


def _detail(e: urllib.error.HTTPError) -> str:
    """What the webui said about an error: its JSON `detail` / `error` / `errors`, else the start of the body."""
    try:
        raw = e.read(64 * 1024)
    except OSError:
        return ""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:300]
    if isinstance(body, dict):
        parts = [body.get(k) for k in ("detail", "error", "errors", "body") if body.get(k)]
        return "; ".join(p if isinstance(p, str) else json.dumps(p)[:300] for p in parts[:2])
    return json.dumps(body)[:300]


def parse_auth(text: Optional[str]) -> Optional[tuple[str, str]]:
    """USER:PASS as given on a command line or in a config (the password may hold ':')."""
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise LorakitError("The webui login must be USER:PASS (as its --api-auth has it).")
    return user, password


class RemoteWebuiGenerator:
    """`Generator` and `XYZGenerator` over a webui's HTTP API."""

    name = "webui-api"

    def __init__(self, api: WebuiApi, *, poll_every: float = 1.0):
        self.api = api
        self.poll_every = poll_every
        self._axis_labels: Optional[list[str]] = None

    # --- what the webui has --------------------------------------------------------------------------------------
    def axis_labels(self) -> list[str]:
        if self._axis_labels is None:
            self._axis_labels = xyz.axis_labels_from_script_info(self.api.get("/sdapi/v1/script-info"))
        return self._axis_labels

    def checkpoint_title(self, name: str) -> str:
        """The webui's title for a checkpoint given by title, name or file name (as the webui itself matches)."""
        models = self.api.get("/sdapi/v1/sd-models") or []
        for key in ("title", "model_name", "filename"):
            for m in models:
                if name == m.get(key) or (key == "filename" and str(m.get(key, "")).endswith("/" + name)):
                    return str(m["title"])
        near = sorted((m for m in models if name in str(m.get("title", ""))), key=lambda m: len(m["title"]))
        if near:
            return str(near[0]["title"])
        have = ", ".join(str(m.get("title")) for m in models) or "none"
        raise NotFound(f"The webui at {self.api.url} has no checkpoint {name!r} (it has: {have}).")

    def check_sampler(self, name: str) -> None:
        """The webui takes an unknown sampler for its default without a word: refuse it by name instead."""
        samplers = self.api.get("/sdapi/v1/samplers") or []
        schedulers = self.api.get("/sdapi/v1/schedulers") or []
        known = {n.lower() for s in samplers for n in [s.get("name", ""), *(s.get("aliases") or [])]}
        base = name
        for sch in schedulers:
            for suffix in (sch.get("label"), sch.get("name"), *(sch.get("aliases") or [])):
                if suffix and base.endswith(" " + suffix):
                    base = base[: -len(suffix) - 1]
                    break
        if base.lower() not in known:
            names = ", ".join(s.get("name", "") for s in samplers)
            raise LorakitError(f"The webui at {self.api.url} has no sampler {name!r} (it has: {names}; a schedule "
                               "type may follow the name, e.g. 'DPM++ 2M Karras').")

    def check_loras(self, texts: Sequence[str]) -> None:
        wanted = xyz.lora_names(texts)
        if not wanted:
            return
        missing = xyz.missing_loras(wanted, self._lora_names())
        if missing:  # it may have been registered since the webui last looked
            self.api.post("/sdapi/v1/refresh-loras", timeout=self.api.connect_timeout * 4)
            missing = xyz.missing_loras(wanted, self._lora_names())
        if missing:
            raise NotFound(xyz.missing_loras_message(missing, f"The webui at {self.api.url}"))

    def _lora_names(self) -> list[str]:
        names = []
        for lora in self.api.get("/sdapi/v1/loras") or []:
            names += [str(lora.get("name", "")), str(lora.get("alias", ""))]
        return names

    # --- requests ------------------------------------------------------------------------------------------------
    def txt2img_payload(self, request: GenRequest, *, checkpoint_title: Optional[str] = None) -> dict:
        """The `/sdapi/v1/txt2img` body for one request (no script)."""
        overrides: dict[str, Any] = {}
        if checkpoint_title:
            overrides["sd_model_checkpoint"] = checkpoint_title
        if request.clip_skip:
            overrides["CLIP_stop_at_last_layers"] = int(request.clip_skip)
        return {"prompt": xyz.prompt_with_loras(request), "negative_prompt": request.negative,
                "seed": int(request.seed), "steps": int(request.steps), "sampler_name": request.sampler,
                "cfg_scale": float(request.cfg),
                "width": int(request.width), "height": int(request.height), "batch_size": 1, "n_iter": 1,
                "override_settings": overrides, "override_settings_restore_afterwards": True,
                "send_images": True, "save_images": False}

    def xyz_payload(self, base: GenRequest, *, x: AxisSpec, y: Optional[AxisSpec] = None,
                    z: Optional[AxisSpec] = None, checkpoint_title: Optional[str] = None) -> dict:
        """The `/sdapi/v1/txt2img` body running the X/Y/Z plot script over `base`."""
        body = self.txt2img_payload(base, checkpoint_title=checkpoint_title)
        args = xyz.script_args(self.axis_labels(), x=x, y=y, z=z)
        return {**body, "script_name": xyz.XYZ_SCRIPT, "script_args": args}

    def _checked(self, request: GenRequest, extra_texts: Sequence[str] = ()) -> Optional[str]:
        """Check the sampler and LoRAs; the checkpoint's title, or None for the webui's current one."""
        self.check_sampler(request.sampler)
        self.check_loras([xyz.prompt_with_loras(request), request.negative, *extra_texts])
        return self.checkpoint_title(request.checkpoint) if request.checkpoint else None

    # --- Generator -----------------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenRequest], *, progress: Optional[ProgressFn] = None,
                 cancel: Optional[CancelFlag] = None) -> list[GenImage]:
        made: list[GenImage] = []
        titles = {r.checkpoint: self._checked(r) for r in _distinct_checks(requests)}
        for i, request in enumerate(requests):
            if cancel is not None and cancel.is_set():
                break
            if progress is not None:
                progress(i, len(requests), f"image {i + 1} of {len(requests)}")
            body = self.txt2img_payload(request, checkpoint_title=titles.get(request.checkpoint))
            with self._watch(None, cancel) as watch:
                answer = self.api.post("/sdapi/v1/txt2img", body)
            if watch.interrupted:
                break  # the webui stopped it part-way: not a finished image
            images, infotexts = _decode_answer(answer, self.api.url)
            seed = xyz.seed_of(infotexts[0], request.seed)
            made.append(GenImage(image=images[0], infotext=infotexts[0], seed=seed, request=request))
        if progress is not None:
            progress(len(made), len(requests), f"{len(made)} image(s) made")
        return made

    def xyz_grid(self, base: GenRequest, *, x: AxisSpec, y: Optional[AxisSpec] = None,
                 z: Optional[AxisSpec] = None, progress: Optional[ProgressFn] = None,
                 cancel: Optional[CancelFlag] = None) -> GridResult:
        """The grid by the webui's X/Y/Z plot script; cells in x-fastest order. On cancel the webui stops and the
        cells not made are blank with an empty infotext."""
        axes = (x, y, z)
        xyz.check_prompt_sr(xyz.prompt_with_loras(base), base.negative, axes)
        title = self._checked(base, xyz.axis_texts(axes))
        body = self.xyz_payload(base, x=x, y=y, z=z, checkpoint_title=title)
        if cancel is not None and cancel.is_set():
            raise Cancelled("The grid was cancelled before it started.")
        with self._watch(progress, cancel) as watch:
            answer = self.api.post("/sdapi/v1/txt2img", body)
        images, infotexts = _decode_answer(answer, self.api.url)
        if not images and watch.interrupted:
            raise Cancelled("The grid was cancelled before its first cell was made.")
        return xyz.grid_result(images, infotexts)

    def _watch(self, progress: Optional[ProgressFn], cancel: Optional[CancelFlag]) -> xyz.Watcher:
        return xyz.Watcher(poll=self._progress, interrupt=lambda: self.api.post("/sdapi/v1/interrupt", timeout=30),
                       progress=progress, cancel=cancel, every=self.poll_every)

    def _progress(self) -> Optional[tuple[int, int, str]]:
        state = (self.api.get("/sdapi/v1/progress?skip_current_image=true", timeout=10) or {}).get("state") or {}
        total = int(state.get("job_count") or 0)
        if total <= 0:
            return None
        done = min(int(state.get("job_no") or 0), total)
        return done, total, f"cell {min(done + 1, total)} of {total}"


def _distinct_checks(requests: Sequence[GenRequest]) -> list[GenRequest]:
    """One request per checkpoint/sampler/LoRA set, so each is checked once against the webui's lists."""
    seen: dict[tuple, GenRequest] = {}
    for r in requests:
        seen.setdefault((r.checkpoint, r.sampler, tuple(lo.name for lo in r.loras), r.prompt, r.negative), r)
    return list(seen.values())


def _decode_answer(answer: Any, url: str) -> tuple[list[Image.Image], list[str]]:
    """The images of a txt2img answer and the infotext of each (from `info`, as the images carry none)."""
    if not isinstance(answer, dict):
        raise LorakitError(f"The webui at {url} answered txt2img with something that is not an image list.")
    images = [_decode_image(b64, url) for b64 in answer.get("images") or []]
    try:
        info = json.loads(answer.get("info") or "{}")
    except (TypeError, ValueError):
        info = {}
    infotexts = [str(t) if t else "" for t in (info.get("infotexts") or [])] if isinstance(info, dict) else []
    return images, infotexts + [""] * max(0, len(images) - len(infotexts))


def _decode_image(b64: Any, url: str) -> Image.Image:
    try:
        raw = base64.b64decode(str(b64).split(",", 1)[-1], validate=False)
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            return im.copy()
    except (binascii.Error, OSError, ValueError, Image.DecompressionBombError) as e:
        raise LorakitError(f"The webui at {url} sent an image that cannot be read ({e}).") from None


def remote_generator(url: str, auth: Optional[str | tuple[str, str]] = None, *,
                     timeout: float = DEFAULT_TIMEOUT) -> RemoteWebuiGenerator:
    """The generator for a webui at `url` (`--webui-url`); `auth` "USER:PASS" or (user, password) for --api-auth."""
    login = parse_auth(auth) if isinstance(auth, str) else auth
    return RemoteWebuiGenerator(WebuiApi(url, auth=login, timeout=timeout))


__all__ = ["RemoteWebuiGenerator", "WebuiApi", "parse_auth", "remote_generator"]
