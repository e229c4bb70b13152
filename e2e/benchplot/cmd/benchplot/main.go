// Command benchplot redraws the benchmarks' plots from their JSON results: benchplot [results dir [plots dir]]
// (defaults build/bench and docs/bench, from the repository's root). Each of weight.json, fanout.json, backlog.json
// and tree.json found is drawn.
package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/op-replicator/op-replicator/e2e/benchplot"
)

func main() {
	in, out := filepath.Join("build", "bench"), filepath.Join("docs", "bench")
	if len(os.Args) > 1 {
		in = os.Args[1]
	}
	if len(os.Args) > 2 {
		out = os.Args[2]
	}
	if err := run(in, out); err != nil {
		fmt.Fprintln(os.Stderr, "benchplot:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	drawn := 0
	var w benchplot.WeightResults
	switch err := benchplot.Read(filepath.Join(in, "weight.json"), &w); {
	case err == nil:
		paths, err := benchplot.Weight(w, out)
		if err != nil {
			return err
		}
		for _, p := range paths {
			fmt.Println(p)
		}
		drawn++
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	var f benchplot.FanoutResults
	switch err := benchplot.Read(filepath.Join(in, "fanout.json"), &f); {
	case err == nil:
		p, err := benchplot.Fanout(f, out)
		if err != nil {
			return err
		}
		fmt.Println(p)
		drawn++
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	var b benchplot.BacklogResults
	switch err := benchplot.Read(filepath.Join(in, "backlog.json"), &b); {
	case err == nil:
		p, err := benchplot.Backlog(b, out)
		if err != nil {
			return err
		}
		fmt.Println(p)
		drawn++
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	var tr benchplot.TreeResults
	switch err := benchplot.Read(filepath.Join(in, "tree.json"), &tr); {
	case err == nil:
		p, err := benchplot.Tree(tr, out)
		if err != nil {
			return err
		}
		fmt.Println(p)
		drawn++
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if drawn == 0 {
		return fmt.Errorf("none of weight.json, fanout.json, backlog.json and tree.json in %s", in)
	}
	return nil
}
