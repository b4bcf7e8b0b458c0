package main

import (
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

func check(t *testing.T, history, mode string) porcupine.CheckResult {
	t.Helper()
	ops, _, err := readHistory(strings.NewReader(history), "test", mode)
	if err != nil {
		t.Fatal(err)
	}
	return porcupine.CheckOperationsTimeout(kvModel, ops, 10*time.Second)
}

func TestSequentialHistoryIsLinearizable(t *testing.T) {
	h := `{"client":0,"op":"put","key":"a","value":"1","call":0,"return":10,"ok":true,"existed":false}
{"client":1,"op":"get","key":"a","call":11,"return":20,"ok":true,"found":true,"value":"1"}
{"client":0,"op":"delete","key":"a","call":21,"return":30,"ok":true,"existed":true}
{"client":1,"op":"get","key":"a","call":31,"return":40,"ok":true,"found":false}`
	for _, mode := range []string{"unknown", "trusted"} {
		if r := check(t, h, mode); r != porcupine.Ok {
			t.Fatalf("%s: %v", mode, r)
		}
	}
}

func TestStaleReadIsCaught(t *testing.T) {
	h := `{"client":0,"op":"put","key":"a","value":"1","call":0,"return":10,"ok":true,"existed":false}
{"client":0,"op":"put","key":"a","value":"2","call":11,"return":20,"ok":true,"existed":true}
{"client":1,"op":"get","key":"a","call":21,"return":30,"ok":true,"found":true,"value":"1"}`
	if r := check(t, h, "unknown"); r != porcupine.Illegal {
		t.Fatalf("a stale read passed: %v", r)
	}
}

func TestWrongExistedIsCaught(t *testing.T) {
	h := `{"client":0,"op":"put","key":"a","value":"1","call":0,"return":10,"ok":true,"existed":false}
{"client":0,"op":"delete","key":"a","call":11,"return":20,"ok":true,"existed":false}`
	if r := check(t, h, "unknown"); r != porcupine.Illegal {
		t.Fatalf("a wrong existed flag passed: %v", r)
	}
}

func TestNotAppliedWriteThatTookEffect(t *testing.T) {
	h := `{"client":0,"op":"put","key":"a","value":"1","call":0,"return":10,"ok":false,"outcome":"not-applied"}
{"client":1,"op":"get","key":"a","call":20,"return":30,"ok":true,"found":true,"value":"1"}`
	if r := check(t, h, "unknown"); r != porcupine.Ok {
		t.Fatalf("unknown mode: %v", r)
	}
	if r := check(t, h, "trusted"); r != porcupine.Illegal {
		t.Fatalf("trusted mode accepted a not-applied write that was read: %v", r)
	}
}

func TestUnknownWriteMayLandAfterTheClientsNextCall(t *testing.T) {
	h := `{"client":0,"op":"put","key":"a","value":"1","call":0,"return":10,"ok":false,"outcome":"unknown"}
{"client":0,"op":"get","key":"a","call":11,"return":20,"ok":true,"found":false}
{"client":1,"op":"get","key":"a","call":21,"return":30,"ok":true,"found":true,"value":"1"}`
	if r := check(t, h, "unknown"); r != porcupine.Ok {
		t.Fatalf("%v", r)
	}
}

func TestBadInputNamesTheLine(t *testing.T) {
	_, _, err := readHistory(strings.NewReader(`{"client":0,"op":"put","key":"a","call":0,"return":1,"ok":true}`), "h.jsonl", "unknown")
	if err == nil || !strings.Contains(err.Error(), "h.jsonl:1") {
		t.Fatalf("got %v", err)
	}
}
