"""kl3m-desk: an offline drafting editor driven by a small legal language model.

Importing the package switches the Hugging Face libraries to offline mode before anything can import
transformers: the app reads models from local folders only and never reaches a model hub.
"""

import os

__version__ = "0.1.0"

APP_NAME = "kl3m-desk"

# huggingface_hub and transformers read these when they are first imported, so they must be set
# here, before any module of the package imports either library. Telemetry is switched off the
# same way.
for _variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ[_variable] = "1"
# Hub kernels are compiled code that transformers would fetch from the Hub: never use them.
os.environ["USE_HUB_KERNELS"] = "0"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
