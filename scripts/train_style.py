"""Train Style for the AUTOMATIC1111 webui and Forge: thin glue; everything else lives in lib_lorakit."""

from modules import script_callbacks, scripts, shared

from lib_lorakit import webui_host


def on_ui_tabs():
    from lib_lorakit.ui.tab import build_tab

    return [(build_tab(webui_host.host()), "Train Style", "train_style")]


def on_ui_settings():
    section = ("train_style", "Train Style")
    shared.opts.add_option("train_style_home", shared.OptionInfo(
        "", "Projects folder (empty: <data dir>/train-style, or --train-style-home)", section=section))
    shared.opts.add_option("train_style_allowed_roots", shared.OptionInfo(
        "", "Folders the tab may import from, one per line (the projects folder is always allowed)",
        section=section))
    shared.opts.add_option("train_style_trainer_python", shared.OptionInfo(
        "", "Trainer python (empty: Train Style's own sd-scripts environment)", section=section))


def on_app_started(demo, app):
    webui_host.mount_api(app)


class TrainStyleGuard(scripts.Script):
    """Stops a generation that would compete with a training run for the GPU, and says why in its info.

    The webui reports and ignores exceptions from scripts, so the guard interrupts the job instead."""

    def title(self):
        return "Train Style guard"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        message = webui_host.training_message()
        if message:
            p.comment(message)
            shared.state.interrupt()
            print(f"[Train Style] {message}")


script_callbacks.on_ui_tabs(on_ui_tabs)
script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_app_started(on_app_started)
