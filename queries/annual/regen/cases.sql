-- Registered cases of the fiscal year by product. / 製品別登録症例数
SELECT product_code, COUNT(DISTINCT pid) AS n
FROM regen_treatment
WHERE fiscal_year = {fy}
GROUP BY product_code
