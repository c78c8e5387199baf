package frontdoor

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mcp-apim/remote-mcp/handler/auth/authtest"
)

// testOddInput: malformed and hostile input to the JSON and form endpoints
// is answered with an OAuth error, never a 5xx (FRONTDOOR sections 2, 6, 7).
func (fd *frontDoor) testOddInput(t *testing.T) {
	fd = fd.from(t, "127.0.0.10")
	c := fd.register(t)
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	for _, body := range []string{
		"grant_type=authorization_code&client_id=%ZZ&code=%",
		"grant_type=refresh_token&client_id=%22%7D%7B&refresh_token=%00%01",
		"=&&&=&grant_type",
		"grant_type=authorization_code&client_id=" + url.QueryEscape(c.ID) + "&code=%E2%82%28&redirect_uri=%FF&code_verifier=%C0%AF",
		"grant_type=authorization_code&client_id=" + url.QueryEscape(c.ID) + "&code=" + strings.Repeat("a", 8000),
		"grant_type=refresh_token&client_id=" + url.QueryEscape(c.ID) + "&refresh_token=" + url.QueryEscape(`","client_id":"x`),
		"grant_type=refresh_token&client_id=" + url.QueryEscape("a\"b\\c\r\nd") + "&refresh_token=x",
		"grant_type=refresh_token&client_id=%2e%2e%2f%2e%2e%2finternal&refresh_token=x",
		"grant_type=authorization_code&client_id=" + url.QueryEscape(c.ID) + "&resource=javascript:alert(1)&code=x&redirect_uri=x&code_verifier=" + strings.Repeat("v", 43),
		"\x00\x01\x02\xff\xfe",
	} {
		r := fd.do(t, "POST", "/token", []byte(body), form)
		if r.Status >= 500 || (r.Status != 400 && r.Status != 401) {
			t.Errorf("/token %.60q: %d %s", body, r.Status, r.Body)
		} else if r.JSON(t)["error"] == nil {
			t.Errorf("/token %.60q: %s", body, r.Body)
		}
	}
	fid := func(v string) string {
		return fd.mint(t, func(cl *authtest.Claims) { cl.FamilyID = v })
	}
	for _, body := range []string{
		"token=a.b.c", "token=..", "token=%00", "token=" + strings.Repeat(".", 300),
		"token=" + url.QueryEscape(fid("../../clients/x")), "token=" + url.QueryEscape(fid(strings.Repeat("f", 500))),
		"token=eyJhbGciOiJub25lIn0.eyJmaWQiOiJ4In0.", "token=%E2%82%28",
	} {
		r := fd.do(t, "POST", "/revoke", []byte(body), form)
		if r.Status != http.StatusOK {
			t.Errorf("/revoke %.60q: %d %s", body, r.Status, r.Body)
		}
	}
	for _, body := range []string{
		strings.Repeat("[", 5000) + strings.Repeat("]", 5000),
		`{"redirect_uris":["https://a.example/cb"],"client_name":"` + strings.Repeat("\\u0000", 100) + `"}`,
		`{"redirect_uris":[1e999]}`,
		`{"redirect_uris":["https://a.example/cb"],"client_name":{"nested":true}}`,
		"\xff\xfe{}",
		`{"redirect_uris":["https://a.example/cb"],"redirect_uris":["http://evil.example/cb"]}`,
	} {
		r := fd.do(t, "POST", "/register", []byte(body), map[string]string{"Content-Type": "application/json"})
		if r.Status >= 500 || r.Status == http.StatusCreated && strings.Contains(string(r.Body), "evil") {
			t.Errorf("/register %.60q: %d %s", body, r.Status, r.Body)
		}
	}
}
