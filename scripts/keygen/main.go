// Command keygen creates the front door's keys once and keeps them: it reads
// a JSON file of named values (creating it when absent), adds whatever key is
// missing and writes it back, readable by its owner only. It prints the names
// it added, never a value.
//
//	go run ./scripts/keygen -file .run/keys.json
package main

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/mcp-apim/remote-mcp/apim-policies/keyset"
)

func main() {
	file := flag.String("file", ".run/keys.json", "JSON object of named values to complete")
	flag.Parse()
	if err := run(*file); err != nil {
		fmt.Fprintln(os.Stderr, "keygen:", err)
		os.Exit(1)
	}
}

func run(file string) error {
	have := map[string]string{}
	b, err := os.ReadFile(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	default:
		if err := json.Unmarshal(b, &have); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
	}
	out, added, err := keyset.Complete(rand.Reader, have)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if len(added) == 0 {
		fmt.Printf("%s: all keys present\n", file)
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	b, err = json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	// Write beside and rename, so an interrupted run never leaves half a file.
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, file); err != nil {
		return err
	}
	fmt.Printf("%s: added %v\n", file, added)
	return nil
}
