"""Models: loading checkpoints (Hub folders, timm weights, CTranslate2 imports), dense backbones and layer groups."""
