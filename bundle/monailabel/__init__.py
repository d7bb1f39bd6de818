"""MONAI Label integration of the bundle: an app (``main.py``) that serves every task of the bundle for annotation
assistance in 3D Slicer or OHIF and fine-tunes it on the annotators' labels.

MONAI Label runs in its own environment (``scripts/setup_monailabel.sh``; pins in ``requirements.txt`` beside this
file). ``spec`` and ``finetune`` import MONAI only; ``infer``, ``train`` and ``main`` need MONAI Label. Importing
this package imports none of them.
"""
