"""Graph drawing (being written)."""

def draw_graph(tensor):
    raise NotImplementedError


def print_graph(tensor):
    raise NotImplementedError
