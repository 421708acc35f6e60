"""Swagger UI in a real browser (headless Chromium, driven by selenium): /docs loads with everything served
by jobdock itself (no other origin is contacted), and "Try it out" on submit with the default example gets
202. Saves a screenshot.

Usage: swagger.py BASE_URL SCREENSHOT_PATH
"""

import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

base, screenshot = sys.argv[1], sys.argv[2]

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1600"):
    options.add_argument(flag)
browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def fail(message):
    browser.save_screenshot(screenshot)
    print(f"swagger ui: FAILED: {message} (screenshot: {screenshot})", file=sys.stderr)
    browser.quit()
    sys.exit(1)


try:
    wait = WebDriverWait(browser, 30)
    browser.get(f"{base}/docs")
    submit = wait.until(ready.presence_of_element_located((By.ID, "operations-Jobs-submit_job")))
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(entry => entry.name)"
    )
    elsewhere = [url for url in resources if not url.startswith(base)]
    if elsewhere:
        fail(f"/docs loaded resources from elsewhere: {elsewhere}")
    submit.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait.until(lambda _: submit.find_element(By.CSS_SELECTOR, ".try-out__btn")).click()
    wait.until(lambda _: submit.find_element(By.CSS_SELECTOR, "button.execute")).click()
    status = wait.until(
        lambda _: submit.find_element(
            By.CSS_SELECTOR, ".live-responses-table .response .response-col_status"
        ).text.strip()
        or False
    )
    browser.execute_script("arguments[0].scrollIntoView()", submit)
    browser.save_screenshot(screenshot)
    if status != "202":
        fail(f'"Try it out" on submit answered {status}, not 202')
    print(f"swagger ui: ok (/docs served locally, Try it out on submit -> 202; screenshot {screenshot})")
finally:
    browser.quit()
