"""The workflow stages that ``project.yml`` runs: reasoning data (CG), CoT fine-tuning (CT),
GRPO (RE), evaluation and assembly. Each stage reads its section of a profile in
``configs/`` and is a command of ``python -m training``."""
