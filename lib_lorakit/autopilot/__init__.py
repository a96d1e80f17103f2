"""From a folder to a judged, registered LoRA in one chain of existing Studio calls (issue 12, part 4).

    import FOLDER → tag → audit → plan (preset, base model, trigger) → train → register → judge → card

`service.AutopilotService` runs the chain as one job and keeps its state in `<project>/autopilot/<id>.json`
(written atomically after every step change), so a page reload finds it, `pause_after` stops it for the user to
look and edit, and after a restart `resume` picks up at the first unfinished step.
"""
