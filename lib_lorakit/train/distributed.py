"""Multi-GPU and multi-node training: the `accelerate launch` options of a run, validated, and their argv.

sd-scripts runs under `accelerate launch` without a config file (FACTS), so everything is on the command line:

    --multi_gpu --num_processes <total> --gpu_ids 0,1 --num_machines M --machine_rank R
    --main_process_ip HOST --main_process_port PORT

Here `num_processes` is the number of processes (one per GPU) on *each* machine, as users count GPUs; accelerate's
`--num_processes` is the total over all machines, so the argv carries `num_processes × num_machines` (accelerate
divides it back by `--num_machines` for torchrun's `--nproc_per_node`). The step maths uses the same total: each
process trains its own batches. Mixed precision is a training option (`mixed_precision` in args.toml), not here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Optional

from ..errors import LorakitError
from ..schema import Field, InvalidSettings, Schema

MAX_PROCESSES = 64
MAX_MACHINES = 1024
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                   r"[A-Za-z0-9])?\.?$|^\[?[0-9A-Fa-f:.]+\]?$")


ACCELERATE_SCHEMA = Schema(noun="multi-GPU setting", groups=(("multi_gpu", "Multi-GPU"),), fields=(
    Field(name="num_processes", type=int, default=1, minimum=1, maximum=MAX_PROCESSES, group="multi_gpu",
          label="GPUs (processes) per machine",
          reason="One training process per GPU on each machine; each trains its own batches, so steps per epoch "
                 "drop."),
    Field(name="gpu_ids", type=str, default="", group="multi_gpu", label="GPU ids (e.g. 0,1; empty: all)",
          reason="This machine's GPUs to use, as many as processes; empty or 'all' uses every visible GPU."),
    Field(name="num_machines", type=int, default=1, minimum=1, maximum=MAX_MACHINES, group="multi_gpu",
          label="Machines", reason="Machines training together; each runs the same command with its own rank."),
    Field(name="machine_rank", type=int, default=0, minimum=0, maximum=MAX_MACHINES - 1, group="multi_gpu",
          label="This machine's rank (0: the main one)",
          reason="This machine's number among the machines, from 0; the main machine is 0."),
    Field(name="main_process_ip", type=str, default="", group="multi_gpu", label="Main machine's address",
          reason="Host name or IP address of the main machine (rank 0), reachable from every machine; needed "
                 "with more than one machine."),
    Field(name="main_process_port", type=int, default=None, minimum=1, maximum=65535, group="multi_gpu",
          label="Port (empty: accelerate's 29500)", reason="The main machine's port for the processes to meet on."),
))


@dataclass(frozen=True)
class AccelerateOptions:
    """How many processes on how many machines; the defaults are one process on this machine."""

    num_processes: int = ACCELERATE_SCHEMA["num_processes"].default  # processes (one per GPU) on each machine
    gpu_ids: str = ACCELERATE_SCHEMA["gpu_ids"].default  # this machine's GPUs, "0,1"; "" or "all": every GPU
    num_machines: int = ACCELERATE_SCHEMA["num_machines"].default
    machine_rank: int = ACCELERATE_SCHEMA["machine_rank"].default  # this machine's rank: 0 is the main machine
    main_process_ip: str = ACCELERATE_SCHEMA["main_process_ip"].default  # required with more than one machine
    main_process_port: Optional[int] = ACCELERATE_SCHEMA["main_process_port"].default  # None: accelerate's 29500

    @property
    def total_processes(self) -> int:
        """Processes over all machines: accelerate's `--num_processes` and the step plan's divisor."""
        return self.num_processes * self.num_machines

    @property
    def distributed(self) -> bool:
        return self.total_processes > 1

    def gpu_list(self) -> list[int]:
        """The GPU ids named (empty for every visible GPU)."""
        text = self.gpu_ids.strip().lower()
        if text in ("", "all"):
            return []
        return [int(part) for part in text.replace(" ", "").split(",")]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_values(cls, num_processes: Any = None, gpu_ids: Any = None, num_machines: Any = None,
                    machine_rank: Any = None, main_process_ip: Any = None,
                    main_process_port: Any = None) -> AccelerateOptions:
        """Options from loose values (form fields, JSON, None for the default), validated."""
        return cls(num_processes=_int("num_processes", num_processes, 1), gpu_ids=str(gpu_ids or "").strip(),
                   num_machines=_int("num_machines", num_machines, 1),
                   machine_rank=_int("machine_rank", machine_rank, 0),
                   main_process_ip=str(main_process_ip or "").strip(),
                   main_process_port=_int("main_process_port", main_process_port, None)).validated()

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> AccelerateOptions:
        data = dict(data or {})
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise LorakitError(f"Unknown multi-GPU option(s): {', '.join(unknown)}. Known: "
                               f"{', '.join(cls.__dataclass_fields__)}.")
        return cls.from_values(**data)

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> AccelerateOptions:
        """Options from values typed by ACCELERATE_SCHEMA (command-line flags, form fields), validated."""
        try:
            return cls(**ACCELERATE_SCHEMA.from_dict(values)).validated()
        except InvalidSettings as e:
            raise LorakitError("Multi-GPU settings: " + "; ".join(e.problems)) from None

    def problems(self) -> list[str]:
        """Every reason accelerate would refuse these options or the training would hang, as sentences."""
        out: list[str] = []
        for name, value, low, high in (("num_processes", self.num_processes, 1, MAX_PROCESSES),
                                       ("num_machines", self.num_machines, 1, MAX_MACHINES)):
            if not _is_int(value) or not low <= value <= high:
                out.append(f"{name} must be a whole number from {low} to {high} (got {value!r}).")
        if not _is_int(self.machine_rank) or self.machine_rank < 0:
            out.append(f"machine_rank must be a whole number from 0 (got {self.machine_rank!r}).")
        elif _is_int(self.num_machines) and self.machine_rank >= self.num_machines:
            out.append(f"machine_rank {self.machine_rank} must be less than num_machines {self.num_machines} "
                       "(ranks count from 0; the main machine is 0).")
        if self.main_process_port is not None and (not _is_int(self.main_process_port)
                                                   or not 1 <= self.main_process_port <= 65535):
            out.append(f"main_process_port must be a port number from 1 to 65535 (got {self.main_process_port!r}).")
        ip = self.main_process_ip
        if _is_int(self.num_machines) and self.num_machines > 1 and not ip:
            out.append(f"main_process_ip is required with {self.num_machines} machines: the address of the main "
                       "machine (rank 0) that every machine can reach.")
        if ip and (len(ip) > 253 or not _HOST.match(ip)):
            out.append(f"main_process_ip {ip!r} is not a host name or IP address.")
        out += self._gpu_problems()
        return out

    def _gpu_problems(self) -> list[str]:
        text = self.gpu_ids.strip().lower()
        if text in ("", "all"):
            return []
        parts = text.replace(" ", "").split(",")
        if not all(p.isdigit() for p in parts):
            return [f"gpu_ids {self.gpu_ids!r}: list GPU numbers separated by commas (e.g. 0,1), or 'all'."]
        ids = [int(p) for p in parts]
        if len(set(ids)) != len(ids):
            return [f"gpu_ids {self.gpu_ids!r} names a GPU twice."]
        if _is_int(self.num_processes) and len(ids) != self.num_processes:
            return [f"gpu_ids lists {len(ids)} GPU(s) ({','.join(map(str, ids))}) but num_processes is "
                    f"{self.num_processes}: each process needs its own GPU, so list {self.num_processes} GPU(s) or "
                    f"set num_processes to {len(ids)}."]
        return []

    def validated(self) -> AccelerateOptions:
        """These options, or LorakitError naming every problem."""
        problems = self.problems()
        if problems:
            raise LorakitError("Multi-GPU settings: " + " ".join(problems))
        return self

    def describe(self) -> str:
        if not self.distributed:
            return "1 process" + (f" on GPU {self.gpu_ids}" if self.gpu_list() else "")
        where = f" on each of {self.num_machines} machines (this one is rank {self.machine_rank})" \
            if self.num_machines > 1 else ""
        return f"{self.num_processes} processes{where}: {self.total_processes} in all"


def accelerate_argv(options: AccelerateOptions) -> list[str]:
    """`accelerate launch`'s options for `options` (validated first). One process on one machine gives only a
    `--gpu_ids` if one was chosen, so a plain run's command line stays as it was."""
    o = options.validated()
    argv: list[str] = []
    if o.distributed:
        argv += ["--multi_gpu", "--num_processes", str(o.total_processes)]
        if o.num_machines > 1:
            argv += ["--num_machines", str(o.num_machines), "--machine_rank", str(o.machine_rank)]
        if o.main_process_ip:
            argv += ["--main_process_ip", o.main_process_ip]
        if o.main_process_port is not None:
            argv += ["--main_process_port", str(o.main_process_port)]
    if o.gpu_list():
        argv += ["--gpu_ids", ",".join(str(i) for i in o.gpu_list())]
    return argv


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(name: str, value: Any, default: Optional[int]) -> Optional[int]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool):
        raise LorakitError(f"Multi-GPU settings: {name} must be a whole number (got {value!r}).")
    if isinstance(value, float):
        if not value.is_integer():
            raise LorakitError(f"Multi-GPU settings: {name} must be a whole number (got {value!r}).")
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        raise LorakitError(f"Multi-GPU settings: {name} must be a whole number (got {value!r}).") from None
