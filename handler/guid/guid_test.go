package guid

import "testing"

func TestValid(t *testing.T) {
	cases := []struct {
		s            string
		valid, lower bool
	}{
		{"00000000-0000-0000-0000-000000000000", true, true},
		{"72f988bf-86f1-41af-91ab-2d7cd011db47", true, true},
		{"72F988BF-86F1-41AF-91AB-2D7CD011DB47", true, false},
		{"{72f988bf-86f1-41af-91ab-2d7cd011db47}", false, false},
		{"72f988bf86f141af91ab2d7cd011db47", false, false},
		{"72f988bf-86f1-41af-91ab-2d7cd011db4g", false, false},
		{"72f988bf-86f1-41af-91ab_2d7cd011db47", false, false},
		{"72f988bf-86f1-41af-91ab-2d7cd011db47/", false, false},
		{"../../../../../../../../../../../../", false, false},
		{"", false, false},
	}
	for _, c := range cases {
		if got := Valid(c.s); got != c.valid {
			t.Errorf("Valid(%q) = %v", c.s, got)
		}
		if got := ValidLower(c.s); got != c.lower {
			t.Errorf("ValidLower(%q) = %v", c.s, got)
		}
	}
}
