"""torch.hub entry points, generated from kanzoo's registry: one per architecture and one per pretrained tag,
and ``kanify`` for any timm CNN with KAN convolutions.

    torch.hub.load('<owner>/kanzoo', 'vggkan_11', pretrained=True)                 # default tag
    torch.hub.load(repo_dir, 'vggkan_11', source='local', pretrained=True, tag='tck_in1k')
    torch.hub.load(repo_dir, 'vggkan_11.tck_in1k', source='local', pretrained=True, num_classes=10)
    torch.hub.load(repo_dir, 'kanify', 'resnet18', source='local', pretrained=True, conv='kagn', degree=3)

Every keyword argument goes to ``kanzoo.create_model`` (``num_classes``, ``in_chans``, ``conv``...).
"""

dependencies = ["torch", "torchvision", "timm", "huggingface_hub", "safetensors"]


def _entry_point(name, tagged):
    import kanzoo
    from timm.models import get_arch_name, model_entrypoint

    architecture = get_arch_name(name)
    tags = [t for t in tagged if get_arch_name(t) == architecture]

    def entry(pretrained=False, tag=None, **kwargs):
        if tag is not None and "." in name:
            raise ValueError(f"{name!r} already names a tag; drop tag={tag!r} or load {architecture!r}")
        return kanzoo.create_model(f"{name}.{tag}" if tag else name, pretrained=pretrained, **kwargs)

    summary = (model_entrypoint(architecture).__doc__ or architecture).strip().splitlines()[0]
    weights = ", ".join(t.partition(".")[2] for t in tags) or "none yet"
    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"{summary}\n\nArgs: pretrained (bool), tag (pretrained weights tag; available: {weights}; "
                     "the first is the default), then any kanzoo.create_model keyword argument.")
    return entry


def kanify(source, pretrained=False, conv="kagn", **kwargs):
    """A timm CNN whose convolutions are KAN convolutions computing the same function (kanzoo.kanify).

    Args: source (timm name[.tag], e.g. 'resnet18'), pretrained (timm's weights of the source), conv (KAN conv
    family), then filter=, the family's arguments (degree=...) and timm.create_model's (num_classes=...).
    """
    import kanzoo

    return kanzoo.create_model(f"kanify:{source}", pretrained=pretrained, conv=conv, **kwargs)


def _generate():
    import kanzoo

    tagged = kanzoo.list_models(pretrained=True)
    return {name: _entry_point(name, tagged) for name in kanzoo.list_models() + tagged}


globals().update(_generate())
