// Command lincheck judges a history of key-value operations recorded by the
// test suite against a linearizable key-value register per key, with
// porcupine.
//
// The history is JSON lines, one finished operation per line:
//
//	{"client":3,"op":"put","key":"k1","value":"v17","call":120,"return":480,
//	 "ok":true,"existed":false}
//	{"client":1,"op":"get","key":"k1","call":130,"return":500,"ok":true,"found":true,"value":"v17"}
//	{"client":2,"op":"delete","key":"k1","call":140,"return":900,"ok":false,"outcome":"unknown"}
//
// Times are in any monotonic unit. A failed operation carries the outcome its
// error reported: "not-applied" or "unknown".
//
// Two interpretations (-mode):
//
//   - unknown: every failed write may have taken effect, at any time after
//     its call (it never returns);
//   - trusted: a failed write whose error says "not-applied" is taken at its
//     word and left out; if it did take effect, the history cannot be
//     linearized.
//
// Failed reads tell nothing and are left out in both. Exit status: 0
// linearizable, 1 not linearizable (the visualization is written to -html),
// 2 bad input, 3 the check timed out or outgrew -max-memory-mb.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

type record struct {
	Client  int     `json:"client"`
	Op      string  `json:"op"`
	Key     string  `json:"key"`
	Value   *string `json:"value"`
	Call    int64   `json:"call"`
	Return  int64   `json:"return"`
	Ok      bool    `json:"ok"`
	Existed *bool   `json:"existed"`
	Found   *bool   `json:"found"`
	Outcome string  `json:"outcome"`
	Error   string  `json:"error"`
}

type input struct {
	op    string
	key   string
	value string
}

type output struct {
	unknown bool
	existed bool
	found   bool
	value   string
}

type register struct {
	present bool
	value   string
}

var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(input).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() interface{} { return register{} },
	Step: func(state, in, out interface{}) (bool, interface{}) {
		s, i, o := state.(register), in.(input), out.(output)
		switch i.op {
		case "put":
			next := register{present: true, value: i.value}
			return o.unknown || o.existed == s.present, next
		case "delete":
			return o.unknown || o.existed == s.present, register{}
		default: // get
			return o.found == s.present && (!s.present || o.value == s.value), s
		}
	},
	Equal: func(a, b interface{}) bool { return a.(register) == b.(register) },
	DescribeOperation: func(in, out interface{}) string {
		i, o := in.(input), out.(output)
		switch {
		case o.unknown:
			return fmt.Sprintf("%s(%s%s) -> unknown", i.op, i.key, valueArg(i))
		case i.op == "get" && o.found:
			return fmt.Sprintf("get(%s) -> %q", i.key, o.value)
		case i.op == "get":
			return fmt.Sprintf("get(%s) -> absent", i.key)
		default:
			return fmt.Sprintf("%s(%s%s) -> existed=%v", i.op, i.key, valueArg(i), o.existed)
		}
	},
	DescribeState: func(state interface{}) string {
		s := state.(register)
		if !s.present {
			return "absent"
		}
		return fmt.Sprintf("%q", s.value)
	},
}

func valueArg(i input) string {
	if i.op == "put" {
		return ", " + fmt.Sprintf("%q", i.value)
	}
	return ""
}

type summary struct {
	Result     string `json:"result"`
	Mode       string `json:"mode"`
	Operations int    `json:"operations"`
	Unknown    int    `json:"unknown"`
	LeftOut    int    `json:"leftOut"`
	HTML       string `json:"html,omitempty"`
}

func fail(status int, format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "lincheck: "+format+"\n", args...)
	os.Exit(status)
}

// readHistory reads a history in the given mode; an error names the line.
func readHistory(f io.Reader, path, mode string) ([]porcupine.Operation, summary, error) {
	sum := summary{Mode: mode}
	var ops []porcupine.Operation
	// A client whose write ended unknown may still see it take effect after
	// its next call; from then on it counts as a new client, so that every
	// client's operations stay sequential.
	clientIDs := map[int]int{}
	nextID := 0
	idOf := func(c int) int {
		if id, ok := clientIDs[c]; ok {
			return id
		}
		clientIDs[c] = nextID
		nextID++
		return clientIDs[c]
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, sum, fmt.Errorf("%s:%d: %v", path, line, err)
		}
		if r.Op != "put" && r.Op != "get" && r.Op != "delete" {
			return nil, sum, fmt.Errorf("%s:%d: unknown op %q", path, line, r.Op)
		}
		if r.Op == "put" && r.Value == nil {
			return nil, sum, fmt.Errorf("%s:%d: a put without a value", path, line)
		}
		if r.Return < r.Call {
			return nil, sum, fmt.Errorf("%s:%d: returns before its call", path, line)
		}
		in := input{op: r.Op, key: r.Key}
		if r.Value != nil && r.Op == "put" {
			in.value = *r.Value
		}
		op := porcupine.Operation{ClientId: idOf(r.Client), Input: in, Call: r.Call, Return: r.Return}
		switch {
		case r.Ok && r.Op == "get":
			if r.Found == nil || (*r.Found && r.Value == nil) {
				return nil, sum, fmt.Errorf("%s:%d: a get without found/value", path, line)
			}
			o := output{found: *r.Found}
			if *r.Found {
				o.value = *r.Value
			}
			op.Output = o
		case r.Ok:
			if r.Existed == nil {
				return nil, sum, fmt.Errorf("%s:%d: a %s without existed", path, line, r.Op)
			}
			op.Output = output{existed: *r.Existed}
		case r.Op == "get":
			sum.LeftOut++
			continue
		case r.Outcome != "not-applied" && r.Outcome != "unknown":
			return nil, sum, fmt.Errorf("%s:%d: a failed write with outcome %q", path, line, r.Outcome)
		case mode == "trusted" && r.Outcome == "not-applied":
			sum.LeftOut++
			continue
		default:
			op.Output = output{unknown: true}
			op.Return = math.MaxInt64
			sum.Unknown++
			clientIDs[r.Client] = nextID
			nextID++
		}
		ops = append(ops, op)
	}
	if err := sc.Err(); err != nil {
		return nil, sum, fmt.Errorf("%s: %v", path, err)
	}
	sum.Operations = len(ops)
	return ops, sum, nil
}

// guardMemory ends the process with status 3 once the heap passes limit:
// a history with many concurrent operations of unknown outcome can make the
// search grow faster than its timeout notices.
func guardMemory(limit int64, sum summary) {
	var m runtime.MemStats
	for range time.Tick(100 * time.Millisecond) {
		runtime.ReadMemStats(&m)
		if int64(m.HeapAlloc) > limit {
			sum.Result = fmt.Sprintf("gave up: the search passed %d MB", limit>>20)
			_ = json.NewEncoder(os.Stdout).Encode(sum)
			os.Exit(3)
		}
	}
}

func main() {
	history := flag.String("history", "", "the history, JSON lines")
	mode := flag.String("mode", "unknown", "unknown: every failed write may have happened; trusted: believe not-applied")
	html := flag.String("html", "", "where to write porcupine's visualization when the history is not linearizable")
	timeout := flag.Duration("timeout", time.Minute, "how long the check may take")
	maxMemory := flag.Int64("max-memory-mb", 4096, "give up (status 3) when the search holds more than this much memory")
	flag.Parse()
	if *history == "" || (*mode != "unknown" && *mode != "trusted") {
		flag.Usage()
		os.Exit(2)
	}
	f, err := os.Open(*history)
	if err != nil {
		fail(2, "%v", err)
	}
	ops, sum, err := readHistory(f, *history, *mode)
	f.Close()
	if err != nil {
		fail(2, "%v", err)
	}
	go guardMemory(*maxMemory<<20, sum)
	result, info := porcupine.CheckOperationsVerbose(kvModel, ops, *timeout)
	status := 0
	switch result {
	case porcupine.Ok:
		sum.Result = "linearizable"
	case porcupine.Illegal:
		sum.Result = "not linearizable"
		status = 1
	default:
		sum.Result = "timed out"
		status = 3
	}
	if status != 0 && *html != "" {
		if err := porcupine.VisualizePath(kvModel, info, *html); err != nil {
			fail(2, "writing %s: %v", *html, err)
		}
		sum.HTML = *html
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(sum); err != nil {
		fail(2, "%v", err)
	}
	os.Exit(status)
}
