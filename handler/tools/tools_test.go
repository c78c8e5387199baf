package tools

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestSchemas checks what clients and models read: every tool has a
// description, annotations and an output schema, every input property is
// described, and no output list is typed nullable.
func TestSchemas(t *testing.T) {
	s := NewServer(Deps{}, "test")
	tools := s.ListTools()
	if len(tools) != 9 {
		t.Fatalf("%d tools registered", len(tools))
	}
	for name, st := range tools {
		tool := st.Tool
		if len(tool.Description) < 40 {
			t.Errorf("%s: description too short for a model to use: %q", name, tool.Description)
		}
		if tool.Annotations.ReadOnlyHint == nil || tool.Annotations.Title == "" {
			t.Errorf("%s: missing readOnlyHint or title annotation", name)
		}
		if tool.OutputSchema.Type != "object" {
			t.Errorf("%s: no output schema", name)
		}
		for prop, v := range tool.InputSchema.Properties {
			if d, _ := v.(map[string]any)["description"].(string); d == "" {
				t.Errorf("%s.%s: input property without description", name, prop)
			}
		}
		out, err := json.Marshal(tool.OutputSchema)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), `"null"`) {
			t.Errorf("%s: output schema has a nullable type: %s", name, out)
		}
		in, _ := json.Marshal(tool.InputSchema)
		if !strings.Contains(string(in), `"additionalProperties":false`) {
			t.Errorf("%s: input schema accepts unknown arguments: %s", name, in)
		}
	}
}
