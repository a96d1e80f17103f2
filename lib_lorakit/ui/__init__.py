"""The gradio tab. Only this package and `webui_host/` may import gradio."""
