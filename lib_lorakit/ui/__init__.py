"""The gradio tab. Only this package and `webui_host.py` may import gradio."""
