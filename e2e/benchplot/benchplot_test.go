package benchplot

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

// TestPlots renders the fixtures' plots and checks each is a PNG of some size.
func TestPlots(t *testing.T) {
	dir := t.TempDir()
	var w WeightResults
	if err := Read(filepath.Join("testdata", "weight.json"), &w); err != nil {
		t.Fatal(err)
	}
	paths, err := Weight(w, dir)
	if err != nil {
		t.Fatal(err)
	}
	var f FanoutResults
	if err := Read(filepath.Join("testdata", "fanout.json"), &f); err != nil {
		t.Fatal(err)
	}
	path, err := Fanout(f, dir)
	if err != nil {
		t.Fatal(err)
	}
	paths = append(paths, path)
	var b BacklogResults
	if err := Read(filepath.Join("testdata", "backlog.json"), &b); err != nil {
		t.Fatal(err)
	}
	if path, err = Backlog(b, dir); err != nil {
		t.Fatal(err)
	}
	paths = append(paths, path)
	var tr TreeResults
	if err := Read(filepath.Join("testdata", "tree.json"), &tr); err != nil {
		t.Fatal(err)
	}
	if path, err = Tree(tr, dir); err != nil {
		t.Fatal(err)
	}
	paths = append(paths, path)
	if len(paths) != 5 {
		t.Fatalf("%d files, want 5: %v", len(paths), paths)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if r := img.Bounds(); r.Dx() < 300 || r.Dy() < 200 {
			t.Errorf("%s: %v, too small", p, r)
		}
	}
	if _, err := Weight(WeightResults{}, dir); err == nil {
		t.Error("no rows: no error")
	}
	if _, err := Backlog(BacklogResults{}, dir); err == nil {
		t.Error("no depths: no error")
	}
	if _, err := Tree(TreeResults{Phases: []TreePhase{{Name: "probes", Relays: []TreeRelay{{Name: "sequencer"}}}}}, dir); err == nil {
		t.Error("no second-tier relay: no error")
	}
}
