"""Train Style's core: datasets, captions, training and evaluation of LoRAs.

Importing this package loads no model, creates no folder and opens no socket; everything heavy is imported
where it is used.
"""

__version__ = "0.1.0"
