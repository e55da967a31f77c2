"""The peer for bench/logs: Drain (He et al., ICWS 2017) as the Loghub benchmark runs it
(logparser's Drain.py, re-typed here because there is no network), with the benchmark's
per-dataset tuned preprocessing regexes, similarity thresholds and depths. Pure Python."""
import re

# logparser/benchmark/Drain_benchmark.py settings for the ten datasets
SETTINGS = {
    "HDFS": ([r"blk_-?\d+", r"(\d+\.){3}\d+(:\d+)?"], 0.5, 4),
    "Hadoop": ([r"(\d+\.){3}\d+"], 0.5, 4),
    "Spark": ([r"(\d+\.){3}\d+", r"\b[KGTM]?B\b", r"([\w-]+\.){2,}[\w-]+"], 0.5, 4),
    "Zookeeper": ([r"(/|)(\d+\.){3}\d+(:\d+)?"], 0.5, 4),
    "BGL": ([r"core\.\d+"], 0.5, 4),
    "HPC": ([r"=\d+"], 0.5, 4),
    "Linux": ([r"(\d+\.){3}\d+", r"\d{2}:\d{2}:\d{2}"], 0.39, 6),
    "Apache": ([r"(\d+\.){3}\d+"], 0.5, 4),
    "OpenSSH": ([r"(\d+\.){3}\d+", r"([\w-]+\.){2,}[\w-]+"], 0.6, 5),
    "Android": ([r"(/[\w-]+)+", r"([\w-]+\.){2,}[\w-]+",
                 r"\b(\-?\+?\d+)\b|\b0[Xx][a-fA-F\d]+\b|\b[a-fA-F\d]{4,}\b"], 0.2, 6),
}
MAX_CHILD = 100


class Cluster:
    __slots__ = ("template", "cid")

    def __init__(self, template, cid):
        self.template = template
        self.cid = cid


class Node:
    __slots__ = ("children",)

    def __init__(self):
        self.children = {}


def has_numbers(s):
    return any(c.isdigit() for c in s)


class Drain:
    def __init__(self, rex, st, depth):
        self.rex = [re.compile(r) for r in rex]
        self.st = st
        self.depth = depth - 2
        self.root = Node()
        self.clusters = []

    def tree_search(self, seq):
        n = len(seq)
        if n not in self.root.children:
            return None
        parent = self.root.children[n]
        depth = 1
        for tok in seq:
            if depth >= self.depth or depth > n:
                break
            if tok in parent.children:
                parent = parent.children[tok]
            elif "<*>" in parent.children:
                parent = parent.children["<*>"]
            else:
                return None
            depth += 1
        return self.fast_match(parent.children, seq)

    def add_to_tree(self, cluster):
        seq = cluster.template
        n = len(seq)
        if n not in self.root.children:
            self.root.children[n] = Node()
        parent = self.root.children[n]
        depth = 1
        for tok in seq:
            if depth >= self.depth or depth > n:
                if not parent.children:
                    parent.children = [cluster]
                else:
                    parent.children.append(cluster)
                break
            ch = parent.children
            if tok not in ch:
                if not has_numbers(tok):
                    if "<*>" in ch:
                        if len(ch) < MAX_CHILD:
                            ch[tok] = Node()
                            parent = ch[tok]
                        else:
                            parent = ch["<*>"]
                    else:
                        if len(ch) + 1 < MAX_CHILD:
                            ch[tok] = Node()
                            parent = ch[tok]
                        elif len(ch) + 1 == MAX_CHILD:
                            ch["<*>"] = Node()
                            parent = ch["<*>"]
                        else:
                            parent = ch["<*>"]
                else:
                    if "<*>" not in ch:
                        ch["<*>"] = Node()
                    parent = ch["<*>"]
            else:
                parent = ch[tok]
            depth += 1

    @staticmethod
    def seq_dist(tpl, seq):
        sim = par = 0
        for a, b in zip(tpl, seq):
            if a == "<*>":
                par += 1
                continue
            if a == b:
                sim += 1
        return sim / len(tpl), par

    def fast_match(self, clusters, seq):
        if not isinstance(clusters, list):
            return None
        best, best_sim, best_par = None, -1, -1
        for c in clusters:
            sim, par = self.seq_dist(c.template, seq)
            if sim > best_sim or (sim == best_sim and par > best_par):
                best, best_sim, best_par = c, sim, par
        return best if best_sim >= self.st else None

    def add(self, line):
        for r in self.rex:
            line = r.sub("<*>", line)
        seq = line.strip().split()
        c = self.tree_search(seq)
        if c is None:
            c = Cluster(seq, len(self.clusters) + 1)
            self.clusters.append(c)
            self.add_to_tree(c)
        else:
            new = [a if a == b else "<*>" for a, b in zip(seq, c.template)]
            if new != c.template:
                c.template = new
        return c


def parse(name, contents):
    """Returns (cluster id, final template) per line."""
    rex, st, depth = SETTINGS[name]
    d = Drain(rex, st, depth)
    got = [d.add(line) for line in contents]
    return [str(c.cid) for c in got], [" ".join(c.template) for c in got]
