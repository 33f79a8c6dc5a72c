"""PyInstaller runtime hook: offline Hugging Face libraries and safe standard streams.

It runs before the app's own code. The package sets the same offline variables in
kl3m_desk/__init__.py. The hook also covers code that imports transformers or huggingface_hub
before kl3m_desk.
"""

import os
import sys

for _variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ[_variable] = "1"
os.environ["USE_HUB_KERNELS"] = "0"

# A windowed Windows build starts with sys.stdout and sys.stderr set to None, and any print or
# warning would then raise. Writing to the null device keeps them harmless.
if sys.stdout is None:
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
if sys.stderr is None:
    sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115

# torch 2.9 and newer on Windows need msvcp140.dll 14.40 or newer. Loading the copy bundled from
# the build machine first keeps an older copy elsewhere on the PATH from being picked up.
# NOTE: this path has not run on Windows yet; the release workflow's self-test exercises it.
if sys.platform == "win32":
    import ctypes

    _bundled = os.path.join(getattr(sys, "_MEIPASS", ""), "msvcp140.dll")
    if os.path.isfile(_bundled):
        ctypes.WinDLL(_bundled)
