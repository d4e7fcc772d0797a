"""safetensors save/load (being written)."""

def save(state_dict, path):
    raise NotImplementedError


def load(path):
    raise NotImplementedError
