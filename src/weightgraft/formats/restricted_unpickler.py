"""A pickle interpreter that can only build tensors, storages and plain containers.

PyTorch checkpoints are pickles, and a pickle is a program: ``GLOBAL`` names any callable
and ``REDUCE`` calls it. This module interprets the opcodes itself (like torch's own
``weights_only`` unpickler) instead of subclassing ``pickle.Unpickler``, for two reasons:

- every global is looked up in one allowlist (``ALLOWED_GLOBALS``) and anything else is
  refused *by name* before anything is built; the allowed names (``torch_globals``) map
  to inert stand-ins (``TensorRef``, ``StorageRef``) that describe a tensor, no torch;
- the C unpickler trusts the stream's numbers: a ``LONG_BINPUT 4294967295`` grows its memo
  to 32 GB and ``BINBYTES8`` allocates the claimed length before reading. Here the memo is
  a dict and every read is a bounded slice of bytes already in memory.

Example:
    >>> import pickle
    >>> RestrictedUnpickler(pickle.dumps({"epoch": 3}, protocol=2), "x.pt").load()
    {'epoch': 3}
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable
from typing import Any

from ..errors import FormatError, UnsafeFileError
from .torch_globals import ALLOWED_GLOBALS, CALLABLE_IDS, Refused, TensorRef

_STRUCTS: dict[str, struct.Struct] = {}


class RestrictedUnpickler:
    """Interpret one pickle held in memory, building only allowlisted objects.

    ``persistent_load`` turns a persistent id (torch: ``('storage', StorageType, key,
    location, numel[, view])``) into an object, usually a ``StorageRef``.

    Example:
        >>> import pickle
        >>> RestrictedUnpickler(pickle.dumps([1, (2.5, "a")], protocol=2), "x").load()
        [1, (2.5, 'a')]
    """

    def __init__(self, source: bytes | mmap.mmap, path: Any, *,
                 persistent_load: Callable[[Any], Any] | None = None,
                 encoding: str = "utf-8", start: int = 0) -> None:
        # ``source`` is the pickle's bytes, or a whole file mapped read-only with the pickle
        # at ``start``: every read is a bounds-checked slice, never a claimed-size buffer.
        self.buf = source
        self.pos = start
        self.end = len(source)
        self.path = path
        self.persistent_load = persistent_load
        self.encoding = encoding

    # -- bounded reads -----------------------------------------------------------------
    def _take(self, n: int) -> bytes:
        pos = self.pos
        if n < 0 or pos + n > self.end:
            raise EOFError(f"needs {n} bytes at offset {pos}, only {self.end - pos} remain")
        self.pos = pos + n
        return self.buf[pos:pos + n]

    def _line(self) -> bytes:
        end = self.buf.find(b"\n", self.pos, min(self.end, self.pos + 65536))
        if end < 0:
            raise EOFError(f"unterminated text argument at offset {self.pos}")
        return self._take(end + 1 - self.pos)[:-1]

    def _unpack(self, fmt: str) -> Any:
        packer = _STRUCTS.get(fmt) or _STRUCTS.setdefault(fmt, struct.Struct(fmt))
        return packer.unpack(self._take(packer.size))[0]

    # -- the interpreter -----------------------------------------------------------------
    def load(self) -> Any:
        """Run the pickle to its ``STOP``; raise ``UnsafeFileError``/``FormatError``."""
        try:
            return self._run()
        except (UnsafeFileError, FormatError):
            raise
        except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                struct.error, UnicodeDecodeError, OverflowError, RecursionError,
                MemoryError) as exc:
            raise FormatError(self.path, f"the pickle is corrupt or truncated near byte "
                              f"{self.pos}: {exc}", expected="a PyTorch checkpoint pickle",
                              fix="re-save the checkpoint; the file may be incomplete") from None

    def _refuse(self, module: str, name: str) -> UnsafeFileError:
        return UnsafeFileError(
            self.path,
            f"refused global '{module}.{name}': the pickle asks to import and call it, and "
            "only tensor, storage and plain-container reconstruction is allowed; no automatic "
            "unsafe fallback is performed",
            expected="a state dict (tensors in dicts, lists and tuples, plain numbers and "
                     "strings)",
            fix="if you trust the file, load it with torch.load(path, weights_only=False) and "
                "save only model.state_dict() with torch.save")

    def find_class(self, module: str, name: str) -> Any:
        """The stand-in for an allowed global; ``UnsafeFileError`` naming any other."""
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise self._refuse(module, name)
        if isinstance(found, Refused):
            raise FormatError(self.path, f"uses {found.name}: {found.why}",
                              expected="dense CPU/GPU tensors",
                              fix="convert the tensors to dense ones before saving")
        return found

    def _call(self, func: Any, args: Any) -> Any:
        if id(func) not in CALLABLE_IDS:
            raise ValueError(f"REDUCE on {type(func).__name__}, which is not an allowed callable")
        if not isinstance(args, tuple):
            raise ValueError("REDUCE arguments are not a tuple")
        return func(*args)

    def _pop_mark(self, stack: list[Any], marks: list[int]) -> list[Any]:
        if not marks:
            raise ValueError("MARK expected")
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    def _run(self) -> Any:  # noqa: C901 - one branch per opcode is the clearest form
        stack: list[Any] = []
        marks: list[int] = []
        memo: dict[int, Any] = {}
        buf, end = self.buf, self.end
        while True:
            pos = self.pos
            if pos >= end:
                raise EOFError("the pickle ends without STOP")
            op = buf[pos:pos + 1]
            self.pos = pos + 1
            # the opcodes torch writes for every tensor come first: this loop is the hot path
            if op in b"qhK" and pos + 2 <= end:  # BINPUT, BINGET, BININT1: one-byte argument
                arg = buf[pos + 1]
                self.pos = pos + 2
                if op == b"q":
                    memo[arg] = stack[-1]
                elif op == b"h":
                    stack.append(memo[arg])
                else:
                    stack.append(arg)
            elif op == b"(":
                marks.append(len(stack))
            elif op == b"X":
                stack.append(self._take(self._unpack("<I")).decode("utf-8", "surrogatepass"))
            elif op == b"t":
                stack.append(tuple(self._pop_mark(stack, marks)))
            elif op == b"R":
                args = stack.pop()
                stack[-1] = self._call(stack[-1], args)
            elif op == b"Q":
                pid = stack.pop()
                if self.persistent_load is None:
                    raise ValueError("persistent id in a pickle that allows none")
                stack.append(self.persistent_load(pid))
            elif op in (b"q", b"h", b"K"):
                raise EOFError("the pickle ends inside an opcode argument")
            elif op == b"\x80":  # PROTO
                if self._unpack("<B") > 5:
                    raise ValueError("unsupported pickle protocol")
            elif op == b"\x95":  # FRAME: frames are only a read hint
                self._unpack("<Q")
            elif op == b".":  # STOP
                if len(stack) != 1 or marks:
                    raise ValueError("pickle ended with an unbalanced stack")
                return stack.pop()
            elif op == b"0":
                stack.pop()
            elif op == b"1":
                self._pop_mark(stack, marks)
            elif op == b"2":
                stack.append(stack[-1])
            elif op == b"N":
                stack.append(None)
            elif op == b"\x88":
                stack.append(True)
            elif op == b"\x89":
                stack.append(False)
            elif op == b"I":
                text = self._line()  # protocol 0 spells booleans I00 / I01
                stack.append(text == b"01" if text in (b"00", b"01") else int(text))
            elif op == b"J":
                stack.append(self._unpack("<i"))
            elif op == b"M":
                stack.append(self._unpack("<H"))
            elif op == b"L":
                stack.append(int(self._line().rstrip(b"L")))
            elif op == b"\x8a":
                stack.append(int.from_bytes(self._take(self._unpack("<B")), "little", signed=True))
            elif op == b"\x8b":
                stack.append(int.from_bytes(self._take(self._unpack("<i")), "little", signed=True))
            elif op == b"F":
                stack.append(float(self._line()))
            elif op == b"G":
                stack.append(self._unpack(">d"))
            elif op in (b"\x8c", b"\x8d"):  # SHORT_BINUNICODE, BINUNICODE8
                n = self._unpack("<B" if op == b"\x8c" else "<Q")
                stack.append(self._take(n).decode("utf-8", "surrogatepass"))
            elif op == b"V":
                stack.append(self._line().decode("raw-unicode-escape"))
            elif op in (b"B", b"C", b"\x8e", b"\x96"):  # BINBYTES, SHORT_, 8, BYTEARRAY8
                n = self._unpack({b"B": "<I", b"C": "<B", b"\x8e": "<Q", b"\x96": "<Q"}[op])
                raw = self._take(n)
                stack.append(bytearray(raw) if op == b"\x96" else raw)
            elif op in (b"T", b"U"):  # py2 str: BINSTRING, SHORT_BINSTRING
                raw = self._take(self._unpack("<i" if op == b"T" else "<B"))
                stack.append(raw.decode(self.encoding) if self.encoding != "bytes" else raw)
            elif op == b")":
                stack.append(())
            elif op in (b"\x85", b"\x86", b"\x87"):
                n = {b"\x85": 1, b"\x86": 2, b"\x87": 3}[op]
                if len(stack) < n:
                    raise ValueError("stack underflow")
                items = tuple(stack[-n:])
                del stack[-n:]
                stack.append(items)
            elif op == b"]":
                stack.append([])
            elif op == b"l":
                stack.append(self._pop_mark(stack, marks))
            elif op == b"a":
                value = stack.pop()
                _as(stack[-1], list).append(value)
            elif op == b"e":
                items = self._pop_mark(stack, marks)
                _as(stack[-1], list).extend(items)
            elif op == b"}":
                stack.append({})
            elif op == b"d":
                items = self._pop_mark(stack, marks)
                stack.append(dict(zip(items[::2], items[1::2])))
            elif op == b"s":
                value, key = stack.pop(), stack.pop()
                _as(stack[-1], dict)[key] = value
            elif op == b"u":
                items = self._pop_mark(stack, marks)
                target = _as(stack[-1], dict)
                for i in range(0, len(items) - 1, 2):
                    target[items[i]] = items[i + 1]
            elif op == b"\x8f":
                stack.append(set())
            elif op == b"\x90":
                items = self._pop_mark(stack, marks)
                _as(stack[-1], set).update(items)
            elif op == b"\x91":
                stack.append(frozenset(self._pop_mark(stack, marks)))
            elif op == b"c":
                module = self._line().decode("utf-8")
                name = self._line().decode("utf-8")
                stack.append(self.find_class(module, name))
            elif op == b"\x93":
                name, module = stack.pop(), stack.pop()
                if not isinstance(module, str) or not isinstance(name, str):
                    raise ValueError("STACK_GLOBAL needs two strings")
                stack.append(self.find_class(module, name))
            elif op == b"\x81":  # NEWOBJ: cls.__new__(cls, *args); same allowlist as REDUCE
                args = stack.pop()
                stack[-1] = self._call(stack[-1], args)
            elif op == b"b":
                state = stack.pop()
                self._build(stack[-1], state)
            elif op in (b"p", b"r"):
                index = int(self._line()) if op == b"p" else self._unpack("<I")
                memo[index] = stack[-1]
            elif op == b"\x94":
                memo[len(memo)] = stack[-1]
            elif op in (b"g", b"j"):
                index = int(self._line()) if op == b"g" else self._unpack("<I")
                stack.append(memo[index])
            else:
                raise ValueError(f"opcode {op!r} is not allowed in a weights pickle")

    def _build(self, target: Any, state: Any) -> None:
        # OrderedDict state dicts carry a ``_metadata`` attribute (module versions) and
        # tensors may carry python attributes; both are kept as data, never set on objects.
        if isinstance(target, TensorRef) and isinstance(state, dict):
            target.attributes.update(state)
        elif isinstance(target, dict) and isinstance(state, dict):
            return
        else:
            raise ValueError(f"BUILD on {type(target).__name__} is not allowed")


def _as(value: Any, kind: type) -> Any:
    if type(value) is not kind and not (kind is dict and isinstance(value, dict)):
        raise ValueError(f"expected a {kind.__name__} on the stack, found {type(value).__name__}")
    return value
